"""Metric writers: clu (TensorBoard + logging) plus `metrics.jsonl`, one JSON object per write.

On resume, `metrics.jsonl` rows newer than the restored step are dropped (rewritten atomically),
so the file reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

from synth_jax import io


class JsonlWriter(interface.MetricWriter):
  """Appends {"step": s, name: value, ...} lines; scalars only (images etc. are ignored)."""

  def __init__(self, path: str):
    self.path = path

  def truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step]
    io.write_text(self.path, "".join(keep))

  def write_scalars(self, step, scalars):
    row = {"step": int(step)}
    for k, v in scalars.items():
      v = float(np.asarray(v))
      row[k] = v if math.isfinite(v) else str(v)  # JSON has no NaN
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def make_writer(workdir: str, resume_step: int | None):
  """TensorBoard under <workdir>/tensorboard and metrics.jsonl (process 0); logging elsewhere."""
  main = jax.process_index() == 0
  writers = [metric_writers.create_default_writer(os.path.join(workdir, "tensorboard"),
                                                  just_logging=not main, asynchronous=False)]
  if main:
    jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    if resume_step is not None:
      jsonl.truncate_after(resume_step)
    elif os.path.exists(jsonl.path):
      os.remove(jsonl.path)
    writers.append(jsonl)
  return metric_writers.MultiWriter(writers)
