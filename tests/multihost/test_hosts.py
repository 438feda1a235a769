"""Where the processes of a run come from (flags, env, TPU, SLURM, Open MPI), and the CLI starts
jax.distributed with them before anything touches a device."""
import pytest

from synth_jax import cli, hosts
from synth_jax.errors import ConfigError


@pytest.mark.parametrize("env,source,kw", [
    ({}, None, None),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, None, None),  # a one-host TPU VM: nothing to start
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "TPU slice", {}),
    ({"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}, "SLURM", {}),
    ({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"}, None, None),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "Open MPI", {}),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     "JAX_COORDINATOR_ADDRESS", {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}),
])
def test_detect_from_environment(env, source, kw):
  got = hosts.detect(env=env)
  assert got == (None if source is None else (source, kw))


def test_detect_from_flags_wins_and_is_checked():
  env = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}
  assert hosts.detect("h0:99", 2, 1, env=env) == (
      "flags", {"coordinator_address": "h0:99", "num_processes": 2, "process_id": 1})
  assert hosts.detect("h0:99", 1, 0, env=env) is None
  with pytest.raises(ConfigError, match="go together"):
    hosts.detect("h0:99", 2, None, env={})
  with pytest.raises(ConfigError, match="needs a port"):
    hosts.detect("h0", 2, 0, env={})
  with pytest.raises(ConfigError, match=r"--process_id 2 must be in 0\.\.1"):
    hosts.detect("h0:1", 2, 2, env={})


def test_cli_initializes_distributed_before_loading_the_config(monkeypatch, tmp_path):
  order = []
  monkeypatch.setattr(hosts, "initialize", lambda *a, **k: order.append(("init", a, k)))
  monkeypatch.setattr(cli, "_load", lambda args, overrides: order.append("load") or (_ for _ in ()).throw(
      ConfigError("stop here")))
  rc = cli.main(["train", "--config", "x.py", "--coordinator", "h:5", "--num_processes", "2",
                 "--process_id", "1", "--lost_after", "7"])
  assert rc == 2
  assert order[0] == ("init", ("h:5", 2, 1), {"lost_after_s": 7.0, "init_timeout_s": 300.0})
  assert order[1] == "load"


def test_error_lines_name_the_host(monkeypatch, capsys):
  monkeypatch.setitem(hosts._state, "count", 4)
  monkeypatch.setitem(hosts._state, "index", 3)
  rc = cli.main(["train"])  # no --config
  assert rc == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: host 3/4: synth-jax train needs --config FILE.py[:ARG] "
                 "(see configs/train/ for examples)"]


def test_coordinator_without_the_other_flags_is_one_line(capsys):
  rc = cli.main(["train", "--config", "x.py", "--coordinator", "host0:1234"])
  assert rc == 2
  assert capsys.readouterr().err.strip().splitlines() == [
      "error: --coordinator, --num_processes and --process_id go together; pass all three "
      "(e.g. --coordinator host0:1234 --num_processes 2 --process_id 0)"]
