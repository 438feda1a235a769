"""Dataset Style Inversion step rate at SD-1.5 shapes: our jitted step vs PyTorch diffusers.

    python bench/invert.py                                   # SD-1.5 shapes, 512 px, batch 8, bf16
    python bench/invert.py --model tiny --resolution 16 --batch 2 --steps 3   # CPU smoke run

Random weights (speed does not depend on them). One train step = text encoder with the token row
substituted + UNet forward/backward to the token row + AdamW on that row. Prints one JSON object;
the PyTorch reference (diffusers UNet2DConditionModel + transformers CLIPTextModel, gradient only on
the embedding table, as diffusers' textual_inversion.py) is measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bench import generate as gen_bench  # noqa: E402
from synth_jax.diffusion import schedulers  # noqa: E402


def bench_jax(args, cfg) -> dict:
  dtype = gen_bench.DTYPES[args.dtype]
  with tempfile.TemporaryDirectory() as tok:
    pipe = gen_bench.random_pipeline(cfg, dtype, tok)
  f = pipe.vae_scale_factor
  h = args.resolution // f
  table = pipe.params["text_encoder"]["embeddings"]["token_embedding"]["embedding"]
  token_id = table.shape[0] - 1
  sched = dict(cfg["scheduler"])

  def loss(emb, params, ids, latents, noise, t):
    te = params["text_encoder"]
    tab = te["embeddings"]["token_embedding"]["embedding"].at[token_id].set(emb.astype(dtype))
    text = pipe.text_encoder.apply({"params": te}, ids, inputs_embeds=tab[ids])
    noisy = schedulers.add_noise(sched, latents, noise, t)
    pred = pipe.unet.apply({"params": params["unet"]}, noisy.astype(dtype), t,
                           text["last_hidden_state"])
    return jnp.mean((pred.astype(jnp.float32) - noise) ** 2)
  tx = optax.adamw(5e-3)

  @jax.jit
  def step(emb, opt, params, ids, latents, noise, t):
    value, g = jax.value_and_grad(loss)(emb, params, ids, latents, noise, t)
    upd, opt = tx.update(g, opt, emb)
    return optax.apply_updates(emb, upd), opt, value
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, token_id, (args.batch, 77)), jnp.int32)
  latents = jnp.asarray(rng.standard_normal((args.batch, h, h, 4)), jnp.float32)
  noise = jnp.asarray(rng.standard_normal((args.batch, h, h, 4)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 1000, args.batch))
  params = {"unet": pipe.params["unet"], "text_encoder": pipe.params["text_encoder"]}
  emb = jnp.zeros((table.shape[1],), jnp.float32)
  opt = tx.init(emb)
  t0 = time.perf_counter()
  emb, opt, v = step(emb, opt, params, ids, latents, noise, t)
  v.block_until_ready()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(args.steps):
    emb, opt, v = step(emb, opt, params, ids, latents, noise, t)
  v.block_until_ready()
  dt = (time.perf_counter() - t0) / args.steps
  return {"steps_per_s": 1 / dt, "images_per_s": args.batch / dt, "compile_s": compile_s,
          "peak_bytes": gen_bench.peak_bytes()}


def bench_torch(args, cfg) -> dict:
  import diffusers
  import torch
  import transformers
  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.float32 if args.dtype == "fp32" else (torch.bfloat16 if device == "cpu" else torch.float16)
  strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
  unet = diffusers.UNet2DConditionModel(**strip(cfg["unet"])).to(device, dtype)
  te = transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfg["text_encoder"])).to(device)
  unet.requires_grad_(False)
  te.requires_grad_(False)
  table = te.get_input_embeddings().weight
  table.requires_grad_(True)
  opt = torch.optim.AdamW([table], lr=5e-3)
  ddpm = diffusers.DDPMScheduler.from_config(strip(cfg["scheduler"]))
  h = args.resolution // 8 if args.model == "sd15" else args.resolution // 2
  ids = torch.randint(0, table.shape[0], (args.batch, 77), device=device)
  latents = torch.randn(args.batch, 4, h, h, device=device)
  noise = torch.randn_like(latents)
  t = torch.randint(0, 1000, (args.batch,), device=device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def step():
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
      hidden = te(ids).last_hidden_state
      pred = unet(ddpm.add_noise(latents, noise, t), t, hidden.to(dtype)).sample
    loss = torch.mean((pred.float() - noise) ** 2)
    loss.backward()
    opt.step()
    opt.zero_grad()
  step()
  sync()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    step()
  sync()
  dt = (time.perf_counter() - t0) / args.steps
  return {"steps_per_s": 1 / dt, "images_per_s": args.batch / dt, "device": device,
          "dtype": str(dtype)}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
  p.add_argument("--resolution", type=int, default=512)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dtype", choices=list(gen_bench.DTYPES), default="bf16")
  p.add_argument("--torch", choices=["yes", "no"], default="yes")
  args = p.parse_args()
  cfg = gen_bench.configs(args.model)
  out = {"bench": "invert", "model": args.model, "resolution": args.resolution,
         "batch": args.batch, "dtype": args.dtype, "backend": jax.default_backend(),
         "jax": bench_jax(args, cfg)}
  if args.torch == "yes":
    try:
      out["torch"] = bench_torch(args, cfg)
      out["speedup_vs_torch"] = out["jax"]["steps_per_s"] / out["torch"]["steps_per_s"]
    except ImportError:
      out["torch"] = {"error": "torch not installed"}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
