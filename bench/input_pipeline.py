"""Examples/s of the training input pipeline at 224x224 from a JPEG ArrayRecord dataset.

  python bench/input_pipeline.py --workers 8 --num-images 2048 --steps 40 --batch-size 256

Writes a JPEG dataset of photo-sized (default 500x375, ImageNet's median) smooth random images
with synth_jax's writer, then times `pipeline.make_train_dataset` (decode, random resized crop,
flip, batch) after a warm-up, and a reference: torchvision's DataLoader with RandomResizedCrop +
flip over the same JPEG bytes, same worker count. By default both yield uint8 pixels, as the
trainer's pipeline does (configs/train/base.py: augment.uint8=True; it normalizes on device);
`--float32` times the host-normalized float32 output instead (reference: ToTensor + Normalize).
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

import numpy as np


def _images(n: int, width: int, height: int, seed: int = 0):
  from PIL import Image
  rng = np.random.default_rng(seed)
  for _ in range(n):
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    noise = rng.integers(-12, 13, (height, width, 3))
    yield np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8)


def write_dataset(data_dir: str, n: int, width: int, height: int) -> str:
  from synth_jax.data import writer as writer_lib
  w = writer_lib.DatasetWriter(data_dir, "bench_jpeg",
                               writer_lib.image_features([f"c{i}" for i in range(10)], "jpeg"),
                               jpeg_quality=90)
  shards = max(1, n // 512)
  for s, part in enumerate(np.array_split(np.arange(n), shards)):
    w.write_shard("train", s, shards, ({"image": im, "label": int(i % 10)}
                                       for i, im in zip(part, _images(len(part), width, height, s))))
  return w.finalize(["train"])


def time_grain(dataset_dir: str, args) -> float:
  from synth_jax.data import pipeline, sources
  split = sources.open_split(dataset_dir, "train")
  ds = pipeline.make_train_dataset(split, args.batch_size, seed=0, resolution=args.resolution,
                                   augment={"uint8": not args.float32},
                                   workers=args.workers, threads=args.threads,
                                   process_index=0, process_count=1)
  it = iter(ds)
  for _ in range(args.warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(args.steps):
    batch = next(it)
  elapsed = time.perf_counter() - start
  assert batch["image"].shape == (args.batch_size, args.resolution, args.resolution, 3)
  assert batch["image"].dtype == (np.float32 if args.float32 else np.uint8), batch["image"].dtype
  if hasattr(it, "close"):
    it.close()
  return args.steps * args.batch_size / elapsed


class _TorchSet:
  def __init__(self, dataset_dir, resolution, float32):
    from synth_jax.data import sources
    self.source = sources.open_split(dataset_dir, "train").source
    self.resolution = resolution
    self.float32 = float32
    self.tf = None

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    from PIL import Image
    from torchvision import transforms as T
    if self.tf is None:
      out = ([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
             if self.float32 else [T.PILToTensor()])  # the same output dtype as ours
      self.tf = T.Compose([T.RandomResizedCrop(self.resolution), T.RandomHorizontalFlip(), *out])
    record = self.source[i]
    return self.tf(Image.open(io.BytesIO(record["image"])).convert("RGB")), int(record["label"])


def time_torch(dataset_dir: str, args) -> float:
  import torch
  loader = torch.utils.data.DataLoader(
      _TorchSet(dataset_dir, args.resolution, args.float32), batch_size=args.batch_size,
      shuffle=True, num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0,
      sampler=None)
  def batches():
    while True:
      yield from loader
  it = batches()
  for _ in range(args.warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(args.steps):
    next(it)
  return args.steps * args.batch_size / (time.perf_counter() - start)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workers", type=int, default=os.cpu_count())
  p.add_argument("--threads", type=int, default=8, help="grain read threads per process")
  p.add_argument("--num-images", type=int, default=1024)
  p.add_argument("--image-size", default="500x375", help="WxH of the stored JPEGs")
  p.add_argument("--resolution", type=int, default=224)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--data-dir", default=None, help="reuse/keep the dataset here")
  p.add_argument("--float32", action="store_true",
                 help="yield host-normalized float32 images instead of the trainer's uint8")
  p.add_argument("--no-reference", action="store_true", help="skip the torchvision DataLoader")
  args = p.parse_args()
  width, height = map(int, args.image_size.lower().split("x"))
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench_input_")
  t0 = time.perf_counter()
  dataset_dir = write_dataset(data_dir, args.num_images, width, height)
  write_s = time.perf_counter() - t0
  size = sum(os.path.getsize(os.path.join(dataset_dir, f)) for f in os.listdir(dataset_dir)
             if ".array_record-" in f)
  result = {"bench": "input_pipeline", "resolution": args.resolution, "workers": args.workers,
            "threads": args.threads, "dtype": "float32" if args.float32 else "uint8",
            "batch_size": args.batch_size, "steps": args.steps,
            "num_images": args.num_images, "image_size": args.image_size,
            "mean_jpeg_kb": round(size / args.num_images / 1024, 1), "cpu_count": os.cpu_count(),
            "write_s": round(write_s, 1)}
  result["grain_examples_per_s"] = round(time_grain(dataset_dir, args), 1)
  if not args.no_reference:
    result["torch_dataloader_examples_per_s"] = round(time_torch(dataset_dir, args), 1)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
