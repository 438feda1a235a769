"""UNet training step rate at SD-1.5 shapes: finetune's own step vs diffusers' PyTorch training step.

    python bench/finetune.py                          # SD-1.5 shapes, 512 px, batch 32, bf16
    python bench/finetune.py --model tiny --resolution 16 --batch 8 --steps 3 --dtype fp32 \
        --torch_compile no                            # CPU smoke run

Random weights (speed does not depend on them). The JAX side times `finetune_step.Trainer`'s step,
what `synth-jax finetune` runs each step: the host batch of step s from (seed, s) (latents,
captions, caption dropout), the jitted frozen text encoder + UNet forward/backward + global-norm
clipping + AdamW on fp32 master weights + EMA, the loss fetched to the host (the run checks it for
NaN), once with `remat` off and once on; XLA's FLOP count of the step and the device's peak
memory. The PyTorch reference is diffusers' train_text_to_image.py step (frozen CLIP text
encoder, UNet under autocast, F.mse_loss, clip_grad_norm_, AdamW, EMAModel.step), eager and under
torch.compile, in the same run. Prints one JSON object.
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
from synth_jax.diffusion import finetune_data, finetune_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def bench_jax(args, cfg, remat: bool) -> dict:
  with tempfile.TemporaryDirectory() as tok:
    pipe = gen_bench.random_pipeline(cfg, gen_bench.DTYPES["fp32"], tok)  # fp32 master weights
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", "finetune", "base.py") + f":resolution={args.resolution}",
      [f"batch_size={args.batch}", f"dtype={CONFIG_DTYPES[args.dtype]}", f"remat={remat}",
       "workdir=unused"])
  h = args.resolution // pipe.vae_scale_factor
  rng = np.random.default_rng(0)
  n = max(16, args.batch)  # cached latents of n real images, 2 views (flip)
  mean = rng.standard_normal((n, 2, h, h, 4)).astype(np.float32)
  ids = finetune_data.tokenize(pipe, ["a photo of a thing"])[None]
  data = finetune_data.FinetuneData(mean, np.full_like(mean, 0.1), np.zeros(n, np.int64),
                                    ["thing"], ids, np.array([1]),
                                    finetune_data.tokenize(pipe, [""])[0])
  mesh = sharding.make_mesh(config.mesh)
  trainer = finetune_step.Trainer(config, pipe, mesh)
  state = trainer.init_state()
  batch = trainer.batch(data, 0)
  step_flops = gen_bench.flops(trainer._step, state, trainer.frozen, *batch)
  t0 = time.perf_counter()
  state, loss = trainer.train_step(state, batch)
  float(loss)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for step in range(1, args.steps + 1):
    state, loss = trainer.train_step(state, trainer.batch(data, step))
    float(loss)  # as the run loop does
  dt = (time.perf_counter() - t0) / args.steps
  return {"steps_per_s": 1 / dt, "images_per_s": args.batch / dt, "compile_s": compile_s,
          "remat": remat, "flops_per_step": step_flops,
          "tflops_per_s": step_flops / dt / 1e12 if step_flops else None,
          "devices": sharding.data_parallel_size(mesh), "peak_bytes": gen_bench.peak_bytes()}


def bench_torch(args, cfg, compile_unet: bool) -> dict:
  import diffusers
  import torch
  import torch.nn.functional as F
  import transformers
  from diffusers.training_utils import EMAModel
  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
  strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
  unet = diffusers.UNet2DConditionModel(**strip(cfg["unet"])).to(device)  # fp32 master weights
  te = transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfg["text_encoder"])).to(
      device, dtype)
  te.requires_grad_(False)
  unet.train()
  opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2)
  ema = EMAModel(unet.parameters(), decay=0.9999)
  ema.to(device)
  ddpm = diffusers.DDPMScheduler.from_config(strip(cfg["scheduler"]))
  model = torch.compile(unet) if compile_unet else unet
  h = args.resolution // 8 if args.model == "sd15" else args.resolution // 2
  vocab = cfg["text_encoder"]["vocab_size"]
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def step():
    ids = torch.randint(0, vocab, (args.batch, 77), device=device)
    latents = torch.randn(args.batch, 4, h, h, device=device)
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    with torch.no_grad():
      hidden = te(ids).last_hidden_state
    with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
      pred = model(ddpm.add_noise(latents, noise, t), t, hidden).sample
    loss = F.mse_loss(pred.float(), noise.float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    ema.step(unet.parameters())
    return float(loss)
  t0 = time.perf_counter()
  step()
  sync()
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(args.steps):
    step()
  sync()
  dt = (time.perf_counter() - t0) / args.steps
  peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
  return {"steps_per_s": 1 / dt, "images_per_s": args.batch / dt, "first_step_s": first,
          "compiled": compile_unet, "peak_bytes": peak, "device": device, "dtype": str(dtype)}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
  p.add_argument("--resolution", type=int, default=512)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dtype", choices=list(CONFIG_DTYPES), default="bf16")
  p.add_argument("--remat", choices=["both", "on", "off"], default="both")
  p.add_argument("--torch", choices=["yes", "no"], default="yes")
  p.add_argument("--torch_compile", choices=["yes", "no"], default="yes")
  args = p.parse_args()
  cfg = gen_bench.configs(args.model)
  out = {"bench": "finetune", "model": args.model, "resolution": args.resolution,
         "batch": args.batch, "dtype": args.dtype, "backend": jax.default_backend()}
  for remat in {"both": (False, True), "on": (True,), "off": (False,)}[args.remat]:
    out[f"jax_remat_{'on' if remat else 'off'}"] = bench_jax(args, cfg, remat)
  best = max(v["steps_per_s"] for k, v in out.items() if k.startswith("jax_"))
  if args.torch == "yes":
    try:
      out["torch_eager"] = bench_torch(args, cfg, False)
      out["speedup_vs_torch_eager"] = best / out["torch_eager"]["steps_per_s"]
      if args.torch_compile == "yes":
        out["torch_compile"] = bench_torch(args, cfg, True)
        out["speedup_vs_torch_compile"] = best / out["torch_compile"]["steps_per_s"]
    except ImportError:
      out["torch"] = {"error": "torch not installed"}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
