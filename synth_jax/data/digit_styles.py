"""The offline study's data: scikit-learn digits with a style gap built in.

  dirs = build_study_data(data_dir)   # {"source": .../digits_source/1.0.0, "target": .../digits_target/1.0.0}

Every one of the 1,797 digits goes to exactly one of three pools, per class, by sample index:
  test    the classifier's test split (the same 20% `digits.digits_arrays` holds out, stream
          "digits_split"), rendered in the TARGET style;
  target  the classifier's real training split (few-shot subsets are drawn from it), TARGET style;
  source  the generator's training images, each rendered `renderings` times in NAMED styles
          (stream "digit_render"), captioned "a thick digit three", "an outlined digit three, drawn
          small", ... (stream "digit_source_split" decides target vs source).
So the generator never sees a test image, nor a target training image, nor the target style: the
captions name thick / thin / outlined / blurred white ink on black (plus contexts: centered, small,
near the edge), while the target task is "pencil": grey strokes on a light, grainy paper, which no
source image has and no caption names. Template prompts ("a digit three") therefore draw images in
the source styles, a style gap by construction (configs/study/README.md says why).

Datasets (tfds ArrayRecord, synth_jax.data.writer): digits_source has split train with features
image, label, prompt (the caption), style, context, index (the scikit-learn sample index);
digits_target has splits train and test with image, label, index. Rerunning is a no-op.
"""
from __future__ import annotations

import os

import numpy as np

from synth_jax import streams
from synth_jax.data import digits as digits_lib
from synth_jax.data import writer as writer_lib
from synth_jax.errors import ConfigError

# The renderings the generator's captions name (white ink on black) and how a caption says them.
NAMED_STYLES = ("thick", "thin", "outlined", "blurred")
CONTEXTS = {"centered": "", "small": "drawn small", "edge": "near the edge"}
TARGET_STYLES = ("pencil",)  # never in the source data, never in a caption
ARTICLE = {"outlined": "an"}


def caption(style: str | None, class_name: str, context: str = "centered") -> str:
  """'a thick digit three, drawn small'; style None gives the plain 'a digit three'."""
  head = f"{ARTICLE.get(style, 'a')} {style} digit {class_name}" if style else f"a digit {class_name}"
  return head + (f", {CONTEXTS[context]}" if CONTEXTS[context] else "")


def _strokes(gray8: np.ndarray, size: int) -> np.ndarray:
  """An 8x8 digit (0..16) -> stroke intensity in [0, 1] at size x size (bicubic, clipped)."""
  from PIL import Image
  im = Image.fromarray((gray8 / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
  return np.clip(np.asarray(im, np.float32) / 255.0, 0.0, 1.0)


def _place(m: np.ndarray, context: str, rng: np.random.Generator) -> np.ndarray:
  """Moves the strokes: 'small' shrinks them to 60% (centered), 'edge' shifts them by a quarter."""
  from scipy import ndimage
  if context == "small":
    n = m.shape[0]
    z = ndimage.zoom(m, 0.6, order=1)
    out = np.zeros_like(m)
    o = (n - z.shape[0]) // 2
    out[o:o + z.shape[0], o:o + z.shape[1]] = z
    return out
  if context == "edge":
    n = m.shape[0]
    dy, dx = (rng.choice([-1, 1], 2) * (n // 5)).tolist()
    return ndimage.shift(m, (dy, dx), order=0, mode="constant")
  return m


def render(m: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
  """Stroke intensity [0, 1] (H, W) -> uint8 RGB (H, W, 3) in one of the renderings."""
  from scipy import ndimage
  if style == "thick":
    v = np.clip(ndimage.grey_dilation(m, size=(3, 3)) * 1.3, 0, 1)
  elif style == "thin":
    v = np.clip((m - 0.55) * 4.0, 0, 1)
  elif style == "outlined":
    mask = m > 0.35
    v = (ndimage.binary_dilation(mask, iterations=1) & ~ndimage.binary_erosion(mask)).astype(np.float32)
    v = v * ~ndimage.binary_erosion(mask, iterations=1)
  elif style == "blurred":
    v = ndimage.gaussian_filter(m, 1.6)
    v = np.clip(v / max(float(v.max()), 1e-6), 0, 1)
  elif style == "pencil":  # the target: grey strokes on light grainy paper, slightly soft
    ink = ndimage.gaussian_filter(m, 0.7)
    paper = 0.88 + 0.05 * rng.standard_normal(m.shape).astype(np.float32)
    rgb = np.stack([paper * 1.0, paper * 0.97, paper * 0.90], -1) * (1 - 0.75 * ink[..., None])
    return np.clip(rgb * 255, 0, 255).round().astype(np.uint8)
  else:
    raise ConfigError(f"digit style {style!r} is unknown; use one of {NAMED_STYLES + TARGET_STYLES}")
  return np.repeat(np.clip(v * 255, 0, 255).round().astype(np.uint8)[..., None], 3, -1)


def pools(seed: int = 0, test_fraction: float = 0.2, source_fraction: float = 0.5):
  """{"test", "target", "source"} -> sorted scikit-learn sample indices; disjoint, cover all.

  The test pool is exactly digits.digits_arrays' test split; of the rest, `source_fraction` of
  every class (stream "digit_source_split") goes to the generator."""
  from sklearn.datasets import load_digits
  labels = load_digits().target
  out = {"test": [], "target": [], "source": []}
  for c in range(10):
    members = np.flatnonzero(labels == c)
    perm = streams.rng(seed, "digits_split", c).permutation(members)
    n_test = int(round(len(members) * test_fraction))
    rest = np.sort(perm[n_test:])
    rest = streams.rng(seed, "digit_source_split", c).permutation(rest)
    n_src = int(round(len(rest) * source_fraction))
    out["test"] += perm[:n_test].tolist()
    out["source"] += rest[:n_src].tolist()
    out["target"] += rest[n_src:].tolist()
  return {k: np.sort(np.asarray(v, np.int64)) for k, v in out.items()}


def study_arrays(size: int = 32, seed: int = 0, renderings: int = 4, target_style: str = "pencil",
                 plain_caption_fraction: float = 0.2, test_fraction: float = 0.2,
                 source_fraction: float = 0.5) -> dict:
  """The arrays build_study_data writes: {"source": {...}, "target_train": {...}, "target_test": {...}}."""
  from sklearn.datasets import load_digits
  if target_style in NAMED_STYLES:
    raise ConfigError(f"target_style={target_style!r} is a named source style; the target must be "
                      f"one the captions never name, e.g. {TARGET_STYLES[0]!r}")
  if renderings < 1:
    raise ConfigError(f"renderings={renderings} must be >= 1 (source renderings per digit)")
  data = load_digits()
  p = pools(seed, test_fraction, source_fraction)
  names = digits_lib.CLASS_NAMES
  src = {"image": [], "label": [], "prompt": [], "style": [], "context": [], "index": []}
  for i in p["source"]:
    c = int(data.target[i])
    m = _strokes(data.images[i], size)
    for r in range(renderings):
      rng = streams.rng(seed, "digit_render", int(i), r)
      style = NAMED_STYLES[rng.integers(len(NAMED_STYLES))]
      context = list(CONTEXTS)[rng.integers(len(CONTEXTS))]
      plain = rng.random() < plain_caption_fraction  # captions without a style word: "a digit three"
      src["image"].append(render(_place(m, context, rng), style, rng))
      src["label"].append(c)
      src["prompt"].append(caption(None if plain else style, names[c], context))
      src["style"].append(style)
      src["context"].append(context)
      src["index"].append(int(i))
  out = {"source": {k: np.asarray(v) for k, v in src.items()}}
  for pool, key in (("target", "target_train"), ("test", "target_test")):
    imgs = [render(_strokes(data.images[i], size), target_style, streams.rng(seed, "digit_render", int(i), 0))
            for i in p[pool]]
    out[key] = {"image": np.stack(imgs), "label": data.target[p[pool]].astype(np.int64),
                "index": p[pool]}
  return out


def build_study_data(data_dir: str, size: int = 32, seed: int = 0, renderings: int = 4,
                     target_style: str = "pencil", num_shards: int = 2) -> dict[str, str]:
  """Writes digits_source and digits_target under data_dir; returns their dataset directories."""
  feats_src = writer_lib.image_features(digits_lib.CLASS_NAMES, "png", extras={
      "prompt": "text", "style": "text", "context": "text", "index": "int64"})
  feats_tgt = writer_lib.image_features(digits_lib.CLASS_NAMES, "png", extras={"index": "int64"})
  ws = writer_lib.DatasetWriter(data_dir, "digits_source", feats_src,
                                description="scikit-learn digits in named renderings (generator data)")
  wt = writer_lib.DatasetWriter(data_dir, "digits_target", feats_tgt,
                                description=f"scikit-learn digits in the unnamed '{target_style}' style")
  done = all(os.path.exists(os.path.join(w.dataset_dir, "dataset_info.json")) for w in (ws, wt))
  if done:
    return {"source": ws.dataset_dir, "target": wt.dataset_dir}
  arrays = study_arrays(size, seed, renderings, target_style)
  for w, split, a in ((ws, "train", arrays["source"]), (wt, "train", arrays["target_train"]),
                      (wt, "test", arrays["target_test"])):
    keys = list(a)
    for s, part in enumerate(np.array_split(np.arange(len(a["label"])), num_shards)):
      w.write_shard(split, s, num_shards, ({k: _item(a[k][j]) for k in keys} for j in part))
  meta = {"seed": seed, "size": size, "renderings": renderings, "target_style": target_style,
          "named_styles": list(NAMED_STYLES), "contexts": list(CONTEXTS)}
  return {"source": ws.finalize(["train"], metadata=meta),
          "target": wt.finalize(["train", "test"], metadata=meta)}


def all_captions() -> list[str]:
  """Every caption the source data can carry, in a fixed order (digit, style, context)."""
  return [caption(s, n, ctx) for n in digits_lib.CLASS_NAMES for s in (None,) + NAMED_STYLES
          for ctx in CONTEXTS]


def build_caption_dataset(data_dir: str, size: int = 32, seed: int = 0, renderings: int = 4,
                          num_shards: int = 2) -> str:
  """digits_source_captions: the source images with label = their caption's index in
  all_captions() (ClassLabel names = the captions), for a trainer that conditions on class names:
  `synth-jax finetune ... --config.templates="['{}']"` then trains on each image's own caption.
  Extras: digit (the digit's class id), index (the scikit-learn sample index)."""
  names = all_captions()
  feats = writer_lib.image_features(names, "png", extras={"digit": "int64", "index": "int64"})
  w = writer_lib.DatasetWriter(data_dir, "digits_source_captions", feats,
                               description="study source images labelled by their caption")
  if os.path.exists(os.path.join(w.dataset_dir, "dataset_info.json")):
    return w.dataset_dir
  a = study_arrays(size, seed, renderings)["source"]
  label = np.array([names.index(p) for p in a["prompt"].tolist()], np.int64)
  for s, part in enumerate(np.array_split(np.arange(len(label)), num_shards)):
    w.write_shard("train", s, num_shards, ({"image": a["image"][j], "label": int(label[j]),
                                            "digit": int(a["label"][j]), "index": int(a["index"][j])}
                                           for j in part))
  return w.finalize(["train"], metadata={"seed": seed, "size": size, "renderings": renderings})


def _item(v):
  if isinstance(v, np.ndarray) and v.ndim:
    return v
  return v.item() if hasattr(v, "item") else v


if __name__ == "__main__":  # python -m synth_jax.data.digit_styles runs/study/data
  import sys
  root = sys.argv[1] if len(sys.argv) > 1 else "runs/study/data"
  for k, v in build_study_data(root).items():
    print(f"{k}: {v}")
  print(f"captions: {build_caption_dataset(root)}")
