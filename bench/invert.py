"""Dataset Style Inversion step rate at SD-1.5 shapes: the Inverter's own step vs PyTorch diffusers.

    python bench/invert.py                                   # SD-1.5 shapes, 512 px, batch 8, bf16
    python bench/invert.py --model tiny --resolution 16 --batch 2 --steps 3   # CPU smoke run

Random weights (speed does not depend on them). The JAX side times `invert.Inverter.step`, what
`synth-jax invert` runs each step: the host batch of step s from (seed, s) (latents, flips,
prompts), the jitted text encoder with the token row substituted + UNet forward/backward to the
token row + the configured optimizer on that row, and the loss fetched to the host (the run checks
it for NaN every step). The real images' latents are random arrays of the right shape (the run
encodes them once, before the loop). Prints one JSON object; the PyTorch reference (diffusers
UNet2DConditionModel + transformers CLIPTextModel, gradient only on the embedding table, as
diffusers' textual_inversion.py) is measured in the same run. `--attention xla,splash,cudnn` times
the step with each attention kernel (`jax_by_attention`; unavailable ones say why).
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
import numpy as np  # noqa: E402

from bench import generate as gen_bench  # noqa: E402
from synth_jax import config as config_lib  # noqa: E402
from synth_jax import sharding  # noqa: E402
from synth_jax.diffusion import invert, invert_data, sampler  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def bench_jax(args, cfg) -> dict:
  dtype = gen_bench.DTYPES[args.dtype]
  with tempfile.TemporaryDirectory() as tok:
    pipe = gen_bench.random_pipeline(cfg, dtype, tok)
  rows = pipe.params["text_encoder"]["embeddings"]["token_embedding"]["embedding"].shape[0]
  if rows > len(pipe.tokenizer):  # the tiny vocab: pad it so the table keeps SD-1.5's 49408 rows
    pipe.tokenizer.add_tokens([f"<bench-pad-{i}>" for i in range(rows - len(pipe.tokenizer))])
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", "invert", "base.py") + f":resolution={args.resolution}",
      [f"batch_size={args.batch}", f"dtype={CONFIG_DTYPES[args.dtype]}",
       f"optimizer={args.optimizer}", "workdir=unused"])
  h = args.resolution // pipe.vae_scale_factor
  rng = np.random.default_rng(0)
  n = max(16, args.batch)  # cached latents of n real images, 2 views (flip)
  mean = rng.standard_normal((n, 2, h, h, 4)).astype(np.float32)
  data = invert_data.InversionData(mean, np.full_like(mean, 0.1), np.zeros(n, np.int64),
                                   ["thing"], per_class=False)
  mesh = sharding.make_mesh(config.mesh)
  impl = sampler.attention_impl_for(dtype, args.attention)
  pipe.unet = pipe.unet.clone(attention_impl=impl)
  inv = invert.Inverter(config, pipe, data, mesh)
  emb, opt = inv.init_state()
  t0 = time.perf_counter()
  emb, opt, loss = inv.step(emb, opt, 0)
  float(loss)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for step in range(1, args.steps + 1):
    emb, opt, loss = inv.step(emb, opt, step)
    float(loss)  # as the run loop does
  dt = (time.perf_counter() - t0) / args.steps
  return {"steps_per_s": 1 / dt, "images_per_s": args.batch / dt, "compile_s": compile_s,
          "optimizer": args.optimizer, "attention": impl, "embedding_rows": int(rows) + 1,
          "devices": sharding.data_parallel_size(mesh), "peak_bytes": gen_bench.peak_bytes()}


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
  optim = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
  opt = optim[args.optimizer]([table], lr=5e-3, weight_decay=1e-2)  # the config's defaults
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
  p.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw")
  p.add_argument("--torch", choices=["yes", "no"], default="yes")
  p.add_argument("--attention", default="auto",
                 help="auto | xla | cudnn | splash, or several comma-separated (each measured)")
  args = p.parse_args()
  cfg = gen_bench.configs(args.model)
  out = {"bench": "invert", "model": args.model, "resolution": args.resolution,
         "batch": args.batch, "dtype": args.dtype, "backend": jax.default_backend(),
         }
  out["jax"], out["jax_by_attention"] = gen_bench.by_attention(args, lambda a: bench_jax(a, cfg))
  if args.torch == "yes":
    try:
      out["torch"] = bench_torch(args, cfg)
      if "steps_per_s" in out["jax"]:
        out["speedup_vs_torch"] = out["jax"]["steps_per_s"] / out["torch"]["steps_per_s"]
    except ImportError:
      out["torch"] = {"error": "torch not installed"}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
