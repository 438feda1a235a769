"""`synth-jax`: one subcommand per stage. Every stage takes --config FILE.py[:ARG] and
--config.KEY=VALUE overrides, and writes under config.workdir."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from synth_jax.errors import SynthJaxError

# name -> (module:function, one-line help). Imported lazily so `--help` is instant.
STAGES = {
    "prompts": ("synth_jax.prompts.stage:prompts", "write prompts.json (templates, LLM+CLIP disambiguation, CD/SD, DSI)"),
    "generate": ("synth_jax.diffusion.generate:generate", "render prompts with Stable Diffusion into a tfds synthetic dataset"),
    "invert": ("synth_jax.diffusion.invert:invert", "Dataset Style Inversion: learn one style token for a real dataset"),
    "filter": ("synth_jax.prompts.filter:filter_dataset", "drop synthetic images that CLIP scores low or misclassifies"),
    "train": ("synth_jax.train.stage:train", "fine-tune a classifier: vanilla, mix, synthetic_only, bridged, auxbn"),
    "sweep": ("synth_jax.train.sweep:sweep", "run a grid of train configs; write results.md and a plot"),
    "data": ("synth_jax.data.stage:data", "import a local image folder or CSV as a tfds dataset"),
    "demo": ("synth_jax.demo:demo", "the whole pipeline on scikit-learn digits with a tiny untrained generator"),
}

# Stages that run without a config file (their defaults live in code).
DEFAULT_CONFIGS = {"demo": "synth_jax.demo:get_config"}


def _resolve(target: str):
  module, _, attr = target.partition(":")
  try:
    return getattr(importlib.import_module(module), attr)
  except ModuleNotFoundError as e:
    if e.name and module.startswith(e.name):
      raise SynthJaxError(f"stage {target} is not implemented in this version") from None
    raise


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="synth-jax",
      description="Synthetic training data from text-to-image models, for better transfer learning.",
      epilog="Each stage: synth-jax STAGE --config FILE.py[:ARG] [--config.KEY=VALUE ...]")
  parser.add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
  sub = parser.add_subparsers(dest="stage", metavar="STAGE", title="stages")
  for name, (_, help_text) in STAGES.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", default=None, metavar="FILE.py[:ARG]",
                   help="config file (ARG is passed to its get_config)" +
                   (" [default: built in]" if name in DEFAULT_CONFIGS else ""))
    p.add_argument("--verbose", action="store_true", dest="verbose_stage",
                   help="debug logging and full tracebacks")
    _add_host_flags(p)
    if name == "sweep":
      p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                     help="a grid axis; repeat for more axes")
      p.add_argument("--print-only", action="store_true",
                     help="print one launch line per point instead of running them")
    if name == "data":
      p.add_argument("action", nargs="?", default="import", choices=["import"],
                     help="what to do (import a folder/CSV)")
  return parser


def _add_host_flags(p: argparse.ArgumentParser) -> None:
  g = p.add_argument_group(
      "several processes (one per host)",
      "Needed only where the environment does not say it: TPU slices, SLURM and Open MPI jobs "
      "are detected. Every process runs the same command with its own --process_id.")
  g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="address of process 0's coordination service")
  g.add_argument("--num_processes", type=int, default=None, metavar="N", help="processes in the run")
  g.add_argument("--process_id", type=int, default=None, metavar="I", help="this process, 0..N-1")
  g.add_argument("--lost_after", type=float, default=60.0, metavar="SECONDS",
                 help="a host silent this long is lost: the others stop with a line naming it "
                      "[default: 60]")
  g.add_argument("--init_timeout", type=float, default=300.0, metavar="SECONDS",
                 help="how long to wait for every process to join [default: 300]")


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  # --config.KEY=VALUE flags are not argparse options: split them off first.
  overrides = [a for a in argv if a.startswith("--config.")]
  rest = [a for a in argv if not a.startswith("--config.")]
  args = parser.parse_args(rest)
  verbose = args.verbose or getattr(args, "verbose_stage", False)
  if args.stage is None:
    parser.print_help()
    return 2
  from synth_jax import hosts, runs
  ok = False
  try:
    # Before anything touches a device: jax.distributed must start first on every process.
    hosts.initialize(args.coordinator, args.num_processes, args.process_id,
                     lost_after_s=args.lost_after, init_timeout_s=args.init_timeout)
    runs.setup_logging(verbose)
    config = _load(args, overrides)
    if config.get("workdir"):
      runs.host_log(runs.workdir(config))
    target = STAGES[args.stage][0]
    if args.stage == "sweep":
      stage_fn = lambda c: _resolve(target)(c, args.sweep, print_only=args.print_only)  # noqa: E731
    else:
      stage_fn = lambda c: _resolve(target)(c)  # noqa: E731
    runs.run_stage(args.stage, stage_fn, config)
    ok = True
  except runs.Preempted as e:
    ok = True
    _say("preempted", e)
    return 0
  except SynthJaxError as e:
    if verbose:
      traceback.print_exc()
    _say("error", e)
    return 2
  except KeyboardInterrupt:
    _say("interrupted", "rerun the same command to resume")
    return 130
  except OSError as e:  # disk full, read-only path, permissions: name the file and the fix
    if verbose:
      traceback.print_exc()
    _say("error", _os_error_line(e))
    return 1
  except Exception as e:  # a bug, or a collective that lost its peer: keep it one line
    if verbose:
      traceback.print_exc()
    hosts.blame_lost_host()  # a lost host is named by the watchdog, which ends this process
    _say("error", f"internal error {type(e).__name__}: {e} (rerun with --verbose for the "
         "traceback; finished outputs are kept, rerun to resume)")
    return 1
  finally:
    hosts.finish(ok)
  return 0


def _say(kind: str, message) -> None:
  """One line on stderr (and in this host's log), naming the host on a multi-process run."""
  from synth_jax import hosts
  where = f"{hosts.tag()}: " if hosts.tag() else ""
  line = f"{kind}: {where}{message}"
  print(line, file=sys.stderr, flush=True)
  for h in logging.getLogger().handlers:
    if isinstance(h, logging.FileHandler):
      h.stream.write(line + "\n")
      h.flush()


def _os_error_line(e: OSError) -> str:
  import errno
  where = f" writing {e.filename!r}" if e.filename else ""
  if e.errno == errno.ENOSPC:
    return f"disk full{where}; free space or point --config.workdir elsewhere, then rerun to resume"
  if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    return f"{e.strerror}{where}; pass a writable --config.workdir"
  return f"{e.strerror or e}{where}; finished outputs are kept, rerun to resume"


def _load(args, overrides):
  from synth_jax import config as config_lib
  from synth_jax.errors import ConfigError
  if args.config:
    return config_lib.load_config(args.config, overrides)
  if args.stage in DEFAULT_CONFIGS:
    config = _resolve(DEFAULT_CONFIGS[args.stage])()
    for item in overrides:
      config_lib.apply_override(config, item)
    return config
  raise ConfigError(f"synth-jax {args.stage} needs --config FILE.py[:ARG] "
                    f"(see configs/{args.stage}/ for examples)")


def entry() -> None:
  logging.captureWarnings(True)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  rc = main()
  from synth_jax import hosts
  if rc != 0 and hosts.count() > 1:
    # jax.distributed's exit-time shutdown waits for every peer (and aborts when one is gone):
    # a failed host leaves at once with its own exit status.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(rc)
  sys.exit(rc)


if __name__ == "__main__":
  entry()
