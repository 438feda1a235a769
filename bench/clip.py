"""CLIP image-embedding throughput (images/s): our Flax vision tower vs transformers' PyTorch one.

Both towers get the same random weights (the torch model's, converted), so the bench also prints
the max abs difference of their embeddings. Input is preprocessed pixels already on the device;
`preprocess_img_per_s_*` is the host-side resize/crop/normalize rate (PIL; one thread, and the
thread pool `CLIP.embed_images` uses) measured apart.
Prints one JSON object. Defaults are ViT-B/16 shapes at 224 px.

  python bench/clip.py --batch 256                                    # GPU
  python bench/clip.py --batch 4 --steps 2 --dtype fp32               # CPU smoke
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax.models import clip as clip_lib
from synth_jax.models import clip_vision


def _hf_config(args) -> dict:
  return {"hidden_size": args.width, "intermediate_size": args.mlp or 4 * args.width,
          "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
          "image_size": args.image_size, "patch_size": args.patch, "projection_dim": args.proj,
          "hidden_act": "quick_gelu"}


def _time(fn, steps, warmup, sync):
  t0 = time.perf_counter()
  out = fn()
  sync(out)
  first = time.perf_counter() - t0
  for _ in range(warmup):
    out = fn()
  sync(out)
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn()
  sync(out)
  return time.perf_counter() - t0, first, out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--image-size", type=int, default=224)
  ap.add_argument("--patch", type=int, default=16)
  ap.add_argument("--width", type=int, default=768)
  ap.add_argument("--layers", type=int, default=12)
  ap.add_argument("--heads", type=int, default=12)
  ap.add_argument("--mlp", type=int, default=0, help="MLP width (0 = 4 x width)")
  ap.add_argument("--proj", type=int, default=512)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
  ap.add_argument("--torch", choices=("eager", "none"), default="eager")
  args = ap.parse_args()
  import torch
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

  torch.manual_seed(0)
  cfg = _hf_config(args)
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  tmodel = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).eval()
  dtype = jnp.bfloat16 if args.dtype == "bf16" else jnp.float32
  model = clip_vision.CLIPVisionModel.from_config(cfg, dtype=dtype, with_projection=True)
  state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
  params = jax.device_put(jax.tree_util.tree_map(
      lambda a: jnp.asarray(a, dtype), clip_vision.params_from_hf(state, model)))
  fn = jax.jit(lambda p, x: clip_lib.normalize(model.apply({"params": p}, x)["image_embeds"]))
  rng = np.random.default_rng(0)
  x_np = rng.standard_normal((args.batch, args.image_size, args.image_size, 3)).astype(np.float32)
  x = jax.device_put(jnp.asarray(x_np, dtype))
  dt, first, out = _time(lambda: fn(params, x), args.steps, args.warmup, lambda o: o.block_until_ready())
  result = {"bench": "clip_image_embed", "config": cfg, "batch": args.batch, "dtype": args.dtype,
            "steps": args.steps, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()][:1], "host": platform.node(),
            "flax": {"img_per_s": round(args.batch * args.steps / dt, 2), "compile_s": round(first, 2)}}
  if args.torch != "none":
    tmodel = tmodel.to(dev)
    tx = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()).to(dev)
    sync = (lambda o: torch.cuda.synchronize()) if dev == "cuda" else (lambda o: None)

    def run():
      with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
        return torch.nn.functional.normalize(tmodel(pixel_values=tx).image_embeds.float(), dim=-1)

    tdt, tfirst, tout = _time(run, args.steps, args.warmup, sync)
    result["torch_eager"] = {"img_per_s": round(args.batch * args.steps / tdt, 2),
                             "first_call_s": round(tfirst, 2), "device": dev,
                             "attn_implementation": tmodel.config._attn_implementation}
    result["max_abs_diff_vs_torch"] = float(np.abs(np.asarray(out, np.float32) - tout.cpu().numpy()).max())
    result["speedup_vs_torch"] = round(result["flax"]["img_per_s"] / result["torch_eager"]["img_per_s"], 3)
  pre = clip_lib.Preprocess(resize=args.image_size, crop=args.image_size)
  images = list(rng.integers(0, 256, (32, 512, 683, 3), dtype=np.uint8))  # a typical SD aspect
  t0 = time.perf_counter()
  for im in images:
    pre(im)
  result["preprocess_img_per_s_1_thread"] = round(len(images) / (time.perf_counter() - t0), 2)
  pool = concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1))
  t0 = time.perf_counter()
  clip_lib.preprocess_images(pre, images, pool)
  result["preprocess_img_per_s_threads"] = round(len(images) / (time.perf_counter() - t0), 2)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
