"""Training throughput (images/s) of our Flax ResNet-50 / ViT-B/16 vs PyTorch eager and torch.compile.

Synthetic input, one SGD-momentum step with BatchNorm state (bf16 compute, fp32 params), timed after
warm-up. Prints one JSON object. Target on one H100: ResNet-50 >= 5,800 img/s at batch 256.

  python bench/train_step.py --batch 256                            # GPU
  python bench/train_step.py --batch 4 --image-size 64 --steps 3    # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from synth_jax.models import resnet50, vit_b16


def _flax_model(name, args):
  kw = dict(num_classes=1000, dtype=jnp.bfloat16 if args.dtype == "bf16" else jnp.float32)
  if name == "resnet50":
    doms = ("real", "synthetic")[:args.domains]
    return resnet50.init(jax.random.key(0), domains=doms, image_size=args.image_size, **kw)
  return vit_b16.init(jax.random.key(0), image_size=args.image_size, **kw)


def bench_flax(name, args):
  model, params, stats = _flax_model(name, args)
  tx = optax.sgd(0.1, momentum=0.9)
  opt = tx.init(params)
  b = args.batch
  split = (b // 2, b - b // 2) if args.domains == 2 and name == "resnet50" else None

  def step(params, stats, opt, x, y):
    def loss_fn(p):
      variables = {"params": p, "batch_stats": stats} if stats else {"params": p}
      (logits, _), upd = model.apply(variables, x, train=True, domain=split, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, upd.get("batch_stats", stats)
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), new_stats, opt, loss

  step = jax.jit(step, donate_argnums=(0, 1, 2))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((b, args.image_size, args.image_size, 3)), jnp.float32)
  y = jnp.asarray(np.arange(b) % 1000, jnp.int32)
  t0 = time.perf_counter()
  params, stats, opt, loss = step(params, stats, opt, x, y)
  loss.block_until_ready()
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    params, stats, opt, loss = step(params, stats, opt, x, y)
  loss.block_until_ready()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    params, stats, opt, loss = step(params, stats, opt, x, y)
  loss.block_until_ready()
  dt = time.perf_counter() - t0
  return {"img_per_s": round(b * args.steps / dt, 2), "compile_s": round(compile_s, 2),
          "loss_finite": bool(np.isfinite(float(loss)))}


def bench_torch(name, args, compile_it):
  import torch
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  if name == "resnet50":
    import torchvision
    m = torchvision.models.resnet50()
  else:
    import timm
    m = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=args.image_size)
  m = m.to(dev).to(memory_format=torch.channels_last).train()
  opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
  b = args.batch
  x = torch.randn(b, 3, args.image_size, args.image_size, device=dev).to(memory_format=torch.channels_last)
  y = torch.arange(b, device=dev) % 1000
  dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

  def step():
    with torch.autocast(dev, dtype=dtype, enabled=args.dtype == "bf16"):
      loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  fn = torch.compile(step) if compile_it else step
  sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
  t0 = time.perf_counter()
  fn()
  sync()
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    fn()
  sync()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    loss = fn()
  sync()
  dt = time.perf_counter() - t0
  return {"img_per_s": round(b * args.steps / dt, 2), "compile_s": round(compile_s, 2),
          "loss_finite": bool(torch.isfinite(loss).item()), "device": dev}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--image-size", type=int, default=224)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--warmup", type=int, default=3)
  ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
  ap.add_argument("--models", default="resnet50,vit_b16")
  ap.add_argument("--domains", type=int, choices=(1, 2), default=1, help="2: AuxBN ResNet (half real, half synthetic)")
  ap.add_argument("--torch", choices=("auto", "eager", "none"), default="auto",
                  help="auto: eager and torch.compile; eager: no compile; none: Flax only")
  args = ap.parse_args()
  result = {"bench": "train_step", "batch": args.batch, "image_size": args.image_size, "dtype": args.dtype,
            "steps": args.steps, "domains": args.domains, "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()][:1], "host": platform.node(), "models": {}}
  for name in args.models.split(","):
    r = {"flax": bench_flax(name, args)}
    if args.torch != "none":
      try:
        r["torch_eager"] = bench_torch(name, args, compile_it=False)
      except ImportError as e:  # torch/torchvision/timm absent: Flax figures only
        r["torch_error"] = str(e)
      if args.torch == "auto" and "torch_eager" in r:
        try:
          r["torch_compile"] = bench_torch(name, args, compile_it=True)
        except Exception as e:  # inductor needs a compiler toolchain; keep the other figures
          r["torch_compile_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    result["models"][name] = r
  print(json.dumps(result))


if __name__ == "__main__":
  main()
