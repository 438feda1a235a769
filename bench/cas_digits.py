"""The finetune learning check (issue 21): a small Stable Diffusion trained from scratch on
scikit-learn digits, scored by its classification accuracy score (CAS).

  python bench/cas_digits.py --workdir runs/bench/cas_digits [--steps 4000 --vae_steps 400]

Measured 2026-12-07 on this 2-core CPU (seed 0, 50 images per digit, guidance 3): CAS 76.4%
after 1500 steps (363 s of training), 100.0% (500 of 500) after 4000 (870 s in all; the ceiling,
the SVC on the real test digits, is 98.9%). CAS measures recognisability, not diversity: the
4000-step images of one digit look alike (cas_sheet.png).

Trains configs/finetune/digits_scratch.py (VAE, then UNet + text encoder; 16 px) on the digits'
train split, draws `--per_class` images per digit from "a photo of the digit <name>" (our sampler,
20 steps, guidance 3), and labels them with synth_jax.diffusion.cas's SVC fit on the same real
train split; that SVC's accuracy on the real test split is the ceiling. Resumes (finetune does).
Prints one JSON object: cas, ceiling, per-class CAS, train and sampling seconds; writes
cas.json and cas_sheet.png (ten images per digit, one row per digit) into the workdir.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", default="runs/bench/cas_digits")
  p.add_argument("--steps", type=int, default=4000)
  p.add_argument("--vae_steps", type=int, default=400)
  p.add_argument("--per_class", type=int, default=50)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  from synth_jax import config as config_lib
  from synth_jax import files
  from synth_jax.data import digits
  from synth_jax.diffusion import cas
  from synth_jax.diffusion import finetune
  from synth_jax.diffusion import finetune_data
  from synth_jax.diffusion import generate_finish
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  data = digits.write_digits(os.path.join(a.workdir, "data"))
  cfg = config_lib.load_config(
      os.path.join(root, "configs/finetune/digits_scratch.py") +
      f":dataset={data},steps={a.steps},vae_steps={a.vae_steps},seed={a.seed}",
      [f"workdir={os.path.join(a.workdir, 'run')}"])
  t = time.time()
  pipeline = finetune.finetune(cfg)
  train_s = time.time() - t
  res = cfg.resolution
  tr_x, tr_y, names = cas.split_arrays(data, "train", res)
  te_x, te_y, _ = cas.split_arrays(data, "test", res)
  clf = cas.fit_classifier(tr_x, tr_y)
  prompts = [ps[0] for ps in finetune_data.class_prompts(cfg, names)]
  t = time.time()
  images, labels = cas.generate_per_class(pipeline, prompts, a.per_class, res, steps=20,
                                          guidance=3.0, seed=a.seed)
  out = {"cas": cas.accuracy(clf, images, labels), "ceiling": cas.accuracy(clf, te_x, te_y),
         "per_class_cas": [cas.accuracy(clf, images[labels == c], labels[labels == c])
                           for c in range(len(names))],
         "per_class": a.per_class, "prompt": prompts[0], "steps": a.steps,
         "vae_steps": a.vae_steps, "resolution": res, "seed": a.seed,
         "train_seconds": round(train_s, 1), "sample_seconds": round(time.time() - t, 1),
         "command": "python bench/cas_digits.py " + " ".join(argv if argv is not None else sys.argv[1:])}
  files.write_json(os.path.join(a.workdir, "cas.json"), out)
  files.write_bytes(os.path.join(a.workdir, "cas_sheet.png"),
                    generate_finish.contact_sheet(list(images[::max(1, a.per_class // 10)]), cols=10))
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main())
