"""Copies a trained small pipeline into synth_jax/assets/digits_generator and records it.

  python bench/ship_generator.py runs/study/generator --seconds 1234 \
      --command "synth-jax finetune --config configs/study/generator.py --config.workdir=runs/study/generator"

Writes, beside the diffusers folder: generator.json (the command, the training config, the wall
time, sha256 of every file, CAS) and TRAINED.md (one line the demo prints, then the same facts).
CAS (measure_cas): 20 images per digit from the prompt "a digit <name>" (our sampler, 20 steps,
guidance 3, 16 px: the resolution it was trained at), labelled by an SVC fit on the generator's
own source images; samples.png shows ten of each digit (one row per digit). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSET = os.path.join(ROOT, "synth_jax", "assets", "digits_generator")
RECORD = ("generator.json", "TRAINED.md", "samples.png")


def sha256s(folder: str) -> dict[str, str]:
  out = {}
  for d, _, names in sorted(os.walk(folder)):
    for n in sorted(names):
      rel = os.path.relpath(os.path.join(d, n), folder)
      if rel in RECORD:
        continue
      with open(os.path.join(d, n), "rb") as f:
        out[rel] = hashlib.sha256(f.read()).hexdigest()
  return out


def measure_cas(model: str, per_class: int = 20, seed: int = 0, resolution: int = 16,
                guidance: float = 3.0) -> tuple[dict, np.ndarray]:
  """CAS in the generator's own domain: an RBF SVC (synth_jax.diffusion.cas) fit on the study's
  source images (the generator's training images: named renderings, all contexts) labels
  `per_class` images per digit drawn from the style-free prompt "a digit <name>". Its ceiling is
  the same classifier on the test digits (never seen by the generator nor the classifier) drawn
  in each named style, centered."""
  from synth_jax import streams
  from synth_jax.data import digit_styles
  from synth_jax.data import digits
  from synth_jax.diffusion import cas
  from sklearn.datasets import load_digits
  src = digit_styles.study_arrays(seed=0)["source"]
  clf = cas.fit_classifier(cas.resized(src["image"], resolution), src["label"])
  data, test = load_digits(), digit_styles.pools(0)["test"]
  ceil_x = cas.resized(np.stack([digit_styles.render(digit_styles._strokes(data.images[i], 32), s,
                                                   streams.rng(0, "digit_render", int(i), 0))
                               for s in digit_styles.NAMED_STYLES for i in test]), resolution)
  ceil_y = np.tile(data.target[test], len(digit_styles.NAMED_STYLES))
  prompts = [f"a digit {n}" for n in digits.CLASS_NAMES]
  images, labels = cas.generate_per_class(model, prompts, per_class, resolution, guidance=guidance,
                                          seed=seed)
  per = [cas.accuracy(clf, images[labels == c], labels[labels == c]) for c in range(10)]
  return {"cas": cas.accuracy(clf, images, labels), "ceiling": cas.accuracy(clf, ceil_x, ceil_y),
          "per_class_cas": per, "per_class": per_class, "prompts": "a digit <name>",
          "resolution": resolution, "steps": 20, "guidance": guidance, "seed": seed,
          "classifier": "RBF SVC on the generator's source images (grey pixels)"}, images


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("workdir", help="the finetune run directory (holds pipeline/ and config.json)")
  p.add_argument("--seconds", type=float, required=True, help="wall time of the training command")
  p.add_argument("--command", required=True, help="the exact command that trained it")
  p.add_argument("--machine", default="this 2-core CPU")
  p.add_argument("--guidance", type=float, default=3.0, help="CFG scale the CAS is measured at")
  a = p.parse_args(argv)
  src = os.path.join(a.workdir, "pipeline")
  if not os.path.isfile(os.path.join(src, "model_index.json")):
    print(f"error: {src} is not a diffusers folder (no model_index.json)", file=sys.stderr)
    return 2
  if os.path.exists(ASSET):
    shutil.rmtree(ASSET)
  shutil.copytree(src, ASSET)
  with open(os.path.join(a.workdir, "config.json")) as f:
    config = json.load(f)
  result, images = measure_cas(ASSET, guidance=a.guidance)
  from synth_jax.diffusion.generate_finish import contact_sheet
  with open(os.path.join(ASSET, "samples.png"), "wb") as f:
    f.write(contact_sheet(list(images[::2]), cols=10))
  files = sha256s(ASSET)
  size = sum(os.path.getsize(os.path.join(ASSET, f)) for f in files)
  record = {"command": a.command, "config": config, "train_seconds": a.seconds, "machine": a.machine,
            "sha256": files, "bytes": size, "cas": result,
            "trained_on": "the study's source images (synth_jax/data/digit_styles.py): 719 scikit-learn "
                          "digits (none of the test or target-train digits) x 4 renderings, captioned "
                          "by style and context"}
  with open(os.path.join(ASSET, "generator.json"), "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  with open(os.path.join(ASSET, "TRAINED.md"), "w") as f:
    f.write(f"a small diffusers pipeline trained from scratch by synth-jax finetune on "
            f"{record['trained_on']}; CAS {100 * result['cas']:.1f}%\n\n"
            f"Command: `python -m synth_jax.data.digit_styles runs/study/data && {a.command}`\n"
            f"Training wall time: {a.seconds:.0f} s on {a.machine}\n"
            f"CAS: {100 * result['cas']:.1f}% of {result['per_class']} images per digit from "
            f"\"a digit <name>\" (16 px, {result['steps']} steps, guidance {result['guidance']}) "
            f"are labelled as their digit by {result['classifier']}; its ceiling, the same "
            f"classifier on held-out real digits in the named styles: {100 * result['ceiling']:.1f}%. "
            f"samples.png: ten images per digit, one row per digit.\n"
            f"Size: {size} bytes; sha256 of every file in generator.json\n")
  print(json.dumps({"asset": ASSET, "bytes": size, "cas": result["cas"], "ceiling": result["ceiling"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
