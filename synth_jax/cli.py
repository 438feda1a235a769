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
    "finetune": ("synth_jax.diffusion.finetune:finetune", "train a Stable Diffusion UNet on a dataset (or a small generator from scratch)"),
    "filter": ("synth_jax.prompts.filter:filter_dataset", "drop synthetic images that CLIP scores low or misclassifies"),
    "train": ("synth_jax.train.stage:train", "fine-tune a classifier: vanilla, mix, synthetic_only, bridged, auxbn"),
    "sweep": ("synth_jax.train.sweep:sweep", "run a grid of train configs; write results.md and a plot"),
    "data": ("synth_jax.data.stage:data", "import a local image folder or CSV as a tfds dataset"),
    "report": ("synth_jax.report_html:report", "one self-contained report.html for a sweep: tables, plots, contact sheets, CAS"),
    "plan": ("synth_jax.train.plan:plan", "compile a stage's step (no weights, no run) and print FLOPs, memory, fit per chip"),
    "demo": ("synth_jax.demo:demo", "the whole pipeline on scikit-learn digits with a tiny untrained generator"),
}

# Stages that run without a config file (their defaults live in code).
DEFAULT_CONFIGS = {"demo": "synth_jax.demo:get_config", "report": "synth_jax.report_html:get_config"}


def _resolve(target: str):
  module, _, attr = target.partition(":")
  try:
    return getattr(importlib.import_module(module), attr)
  except ModuleNotFoundError as e:
    if e.name and module.startswith(e.name):
      raise SynthJaxError(f"stage {target} is not implemented in this version") from None
    raise


class _Parser(argparse.ArgumentParser):
  """A bad flag (`plan --devices abc`, an unknown stage) is one line naming it and the help to
  read, like every other refusal, instead of argparse's usage block."""

  def error(self, message):
    self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
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
    if name == "report":  # synth-jax report RUN_DIR (= --config.run_dir=RUN_DIR)
      p.add_argument("run_dir", nargs="?", default=None, help="the sweep directory to report on")
    if name == "plan":
      p.add_argument("--devices", type=int, default=1, help="chips the batch is split over")
      p.add_argument("--chip", default="h100,a100,v5e,v5p,v6e", help="comma-separated chip names")
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
  try:
    overrides, rest = split_overrides(argv)
  except SynthJaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  args = parser.parse_args(rest)
  if getattr(args, "run_dir", None):  # report: its run dir; the stage's own lock lives below it
    overrides += [f"run_dir={args.run_dir}", f"workdir={os.path.join(args.run_dir, 'report')}"]
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
    if args.stage == "report":
      _report_dirs(config)
    from synth_jax import compile_cache
    compile_cache.setup(config.get("compile_cache", ""))  # before anything compiles
    target = STAGES[args.stage][0]
    if args.stage == "plan":  # reads and writes no run directory
      _resolve(target)(config, devices=args.devices, chips=tuple(args.chip.split(",")))
      return 0
    if args.stage == "sweep":
      stage_fn = lambda c: _resolve(target)(c, args.sweep, print_only=args.print_only)  # noqa: E731
    else:
      stage_fn = lambda c: _resolve(target)(c)  # noqa: E731
    runs.run_stage(args.stage, stage_fn, config, log=True)  # logs/host-<i>.log after validation
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


def _report_dirs(config) -> None:
  """report: RUN_DIR is required; its lock and record live in <RUN_DIR>/report unless given."""
  from synth_jax.errors import ConfigError
  if not config.get("run_dir"):
    raise ConfigError("report needs the sweep directory: synth-jax report RUN_DIR "
                      "(e.g. synth-jax report runs/study)")
  if not config.get("workdir"):
    config.workdir = os.path.join(str(config.run_dir), "report")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(--config.KEY=VALUE overrides, the rest); `--config.KEY VALUE` is read as KEY=VALUE, and a
  second --config FILE is refused (argparse would silently keep the last)."""
  from synth_jax.errors import ConfigError
  overrides, rest, i = [], [], 0
  while i < len(argv):
    a = argv[i]
    if a.startswith("--config.") and "=" not in a and i + 1 < len(argv) and (
        not argv[i + 1].startswith("--")):
      overrides.append(f"{a}={argv[i + 1]}")
      i += 2
      continue
    (overrides if a.startswith("--config.") else rest).append(a)
    i += 1
  given = [a for a in rest if a == "--config" or a.startswith("--config=")]
  if len(given) > 1:
    raise ConfigError("--config is given twice; pass one config file (set single keys with "
                      "--config.KEY=VALUE)")
  return overrides, rest


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
  where = f": {e.filename!r}" if e.filename else ""  # an input or an output: do not guess which
  if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    return (f"{e.strerror}{where}; make an input readable, or pass a writable --config.workdir "
            "for outputs")
  if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOENT):
    return f"{e.strerror}{where}; check the paths given in the config"
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
