"""Deterministic crash points for the fault-injection suite (tests/faults/).

`SYNTH_JAX_KILL_AT="name:N"` makes the process SIGKILL itself the N-th time it reaches
`point(name)` (N counts from 1). Unset, `point` is one dict lookup: free on hot paths.
Points in the code base: "atomic_write" (a file's bytes are written and synced, not yet renamed:
the worst moment for a shard or checkpoint file), plus the ones stages add ("train_step",
"generate_batch", "invert_step", "phase_end" (a training phase's final checkpoint is written, its
evaluation not yet), ...).
"""
from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
  spec = os.environ.get("SYNTH_JAX_KILL_AT")
  if not spec:
    return None
  name, _, n = spec.rpartition(":")
  return (name, int(n)) if name else (spec, 1)


def point(name: str) -> None:
  target = _target()
  if target is None or target[0] != name:
    return
  _counts[name] = _counts.get(name, 0) + 1
  if _counts[name] == target[1]:
    os.kill(os.getpid(), signal.SIGKILL)
