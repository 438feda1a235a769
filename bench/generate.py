"""Text-to-image throughput: our jitted Flax sampler vs PyTorch diffusers, same shapes, one run.

    python bench/generate.py                          # SD-1.5 shapes, 512 px, 25 steps, CFG, bf16
    python bench/generate.py --model tiny --resolution 16 --batch 2 --steps 4   # CPU smoke run

Random weights at the real shapes (speed does not depend on the values). Prints one JSON object:
images/s, UNet step ms, VAE decode ms, compile s, peak device memory, XLA's FLOP count of one UNet
step (and the TFLOP/s it achieves), where a batch's time goes (UNet loop / VAE decode / the rest),
and the same for diffusers (eager, and torch.compile where it works) when torch is installed and
--torch is not 'none'. `--profile DIR` also writes a jax.profiler trace of one batch.
`--attention xla,splash,cudnn` measures each attention kernel in the same run (`jax_by_attention`;
one this backend cannot run is recorded as unavailable, with the reason); "jax" is the first that
ran.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from synth_jax import sharding  # noqa: E402
from synth_jax.diffusion import loading, sampler, tiny  # noqa: E402
from synth_jax.diffusion import unet as unet_lib, vae as vae_lib  # noqa: E402
from synth_jax.models import clip_text  # noqa: E402

SD15 = {
    "unet": {"sample_size": 64, "in_channels": 4, "out_channels": 4,
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
             "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
             "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32},
    "vae": {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512,
            "scaling_factor": 0.18215},
    "text_encoder": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072,
                     "num_hidden_layers": 12, "num_attention_heads": 12,
                     "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "layer_norm_eps": 1e-5, "projection_dim": 768, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
}
DTYPES = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}


def configs(model: str) -> dict:
  if model == "sd15":
    scheduler = tiny.tiny_configs()["scheduler"]
    return dict(SD15, scheduler=scheduler)
  with tempfile.TemporaryDirectory() as tok:  # the tiny vocab: ids must fit the embedding table
    tiny.write_tiny_tokenizer(tok)
    tokenizer, _ = loading.load_tokenizer(tok)
  return tiny.tiny_configs(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)


def random_pipeline(cfg: dict, dtype, tok_dir: str) -> loading.StableDiffusion:
  tiny.write_tiny_tokenizer(tok_dir)
  tokenizer, files = loading.load_tokenizer(tok_dir)
  unet = unet_lib.UNet2DConditionModel.from_config(cfg["unet"], dtype)
  vae = vae_lib.AutoencoderKL.from_config(cfg["vae"], dtype)
  te = clip_text.CLIPTextModel.from_config(cfg["text_encoder"], dtype=dtype)

  def init(module, seed):  # on device, directly in the compute dtype
    params = jax.jit(lambda k: module.init(k, *module.dummy_inputs())["params"])(
        jax.random.PRNGKey(seed))
    return jax.tree_util.tree_map(lambda x: x.astype(dtype), params)
  params = {"unet": init(unet, 0), "vae": init(vae, 1),
            "text_encoder": jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype),
                                                   te.init_params(2))}
  return loading.StableDiffusion(unet=unet, vae=vae, text_encoder=te, params=params,
                                 tokenizer=tokenizer, scheduler_config=cfg["scheduler"],
                                 configs={"unet": cfg["unet"], "vae": cfg["vae"],
                                          "text_encoder": cfg["text_encoder"]},
                                 dtype=dtype, tokenizer_files=files)


def timed(fn, repeats: int) -> float:
  """Median seconds of `fn()` (which must block) over `repeats` runs."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def bench_jax(args, cfg) -> dict:
  dtype = DTYPES[args.dtype]
  with tempfile.TemporaryDirectory() as tok:
    pipe = random_pipeline(cfg, dtype, tok)
  mesh = sharding.make_mesh(None)
  s = sampler.Sampler(pipe, mesh, batch_size=args.batch, num_steps=args.steps,
                      height=args.resolution, width=args.resolution, attention=args.attention)
  prompts = [f"a photo of a cat number {i}" for i in range(args.batch)]
  seeds = np.arange(args.batch)
  t = time.perf_counter()
  s(prompts, "", seeds, 7.5)
  compile_s = time.perf_counter() - t
  total = timed(lambda: s(prompts, "", seeds + 1, 7.5), args.repeats)
  if args.profile:  # one more call under the profiler: open the trace in TensorBoard / Perfetto
    with jax.profiler.trace(args.profile):
      s(prompts, "", seeds + 2, 7.5)

  f = pipe.vae_scale_factor
  h = args.resolution // f
  x = jnp.zeros((2 * args.batch, h, h, 4), dtype)
  ctx = jnp.zeros((2 * args.batch, 77, cfg["unet"]["cross_attention_dim"]), dtype)
  unet_fn = jax.jit(lambda p, x: s.unet.apply({"params": p}, x, jnp.full((x.shape[0],), 500), ctx))
  unet_flops = flops(unet_fn, s.params["unet"], x)
  unet_fn(s.params["unet"], x).block_until_ready()
  unet_s = timed(lambda: unet_fn(s.params["unet"], x).block_until_ready(), args.repeats)
  z = jnp.zeros((args.batch, h, h, 4), dtype)
  dec = jax.jit(lambda p, z: s.vae.apply({"params": p}, z, method=s.vae.decode))
  vae_flops = flops(dec, s.params["vae"], z)
  dec(s.params["vae"], z).block_until_ready()
  vae_s = timed(lambda: dec(s.params["vae"], z).block_until_ready(), args.repeats)
  # Where a batch's time goes: the denoising loop is `steps` UNet calls on the CFG-doubled batch;
  # the rest (text encoder, scheduler arithmetic, uint8 conversion, dispatch) is what is left.
  unet_total = args.steps * unet_s
  split = {"unet_loop_s": unet_total, "vae_decode_s": vae_s,
           "other_s": max(total - unet_total - vae_s, 0.0)}
  out = {"images_per_s": args.batch / total, "batch_s": total, "unet_step_ms": unet_s * 1e3,
         "vae_decode_ms": vae_s * 1e3, "compile_s": compile_s, "peak_bytes": peak_bytes(),
         "attention": sampler.attention_impl_for(dtype, args.attention), "time_split": split,
         "unet_gflops_per_step": unet_flops and unet_flops / 1e9,
         "vae_decode_gflops": vae_flops and vae_flops / 1e9}
  if unet_flops:
    out["unet_achieved_tflops"] = unet_flops / unet_s / 1e12
    # The loop alone at the measured UNet speed: an upper bound for images/s with this UNet.
    out["images_per_s_unet_bound"] = args.batch / unet_total
  if args.profile:
    out["profile_dir"] = args.profile
  return out


def by_attention(args, bench) -> tuple[dict, dict]:
  """Runs `bench(args)` once per comma-separated --attention value; returns (first result that
  ran, {value: result or {"unavailable": reason}})."""
  from synth_jax.errors import ConfigError
  results = {}
  for impl in [a.strip() for a in args.attention.split(",") if a.strip()]:
    one = argparse.Namespace(**{**vars(args), "attention": impl})
    try:
      results[impl] = bench(one)
    except ConfigError as e:  # e.g. splash off a TPU, cuDNN off a GPU
      results[impl] = {"unavailable": str(e)}
  ran = [r for r in results.values() if "unavailable" not in r]
  return (ran[0] if ran else {"unavailable": "no attention kernel ran"}), results


def flops(jitted, *args) -> float | None:
  """XLA's own FLOP count of the compiled function (None where the backend does not report it)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) if cost and cost.get("flops") else None
  except Exception:  # cost analysis is best-effort diagnostics, never a reason to fail the bench
    return None


def bench_torch(args, cfg, compile_unet: bool) -> dict:
  import diffusers
  import torch
  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
  if device == "cuda" and args.dtype == "bf16":
    dtype = torch.float16  # the usual PyTorch setting (the reference is fp16)
  with tempfile.TemporaryDirectory() as tok:
    tiny.write_tiny_tokenizer(tok)
    import transformers
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tok)
  strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
  te_cfg = transformers.CLIPTextConfig(**cfg["text_encoder"])
  pipe = diffusers.StableDiffusionPipeline(
      unet=diffusers.UNet2DConditionModel(**strip(cfg["unet"])),
      vae=diffusers.AutoencoderKL(**strip(cfg["vae"])),
      text_encoder=transformers.CLIPTextModel(te_cfg), tokenizer=tokenizer,
      scheduler=diffusers.DPMSolverMultistepScheduler.from_config(strip(cfg["scheduler"])),
      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
  pipe = pipe.to(device, dtype)
  pipe.set_progress_bar_config(disable=True)
  if compile_unet:
    pipe.unet = torch.compile(pipe.unet)
  prompts = [f"a photo of a cat number {i}" for i in range(args.batch)]
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def run():
    pipe(prompts, height=args.resolution, width=args.resolution,
         num_inference_steps=args.steps, guidance_scale=7.5, output_type="np")
    sync()
  t = time.perf_counter()
  run()
  warm = time.perf_counter() - t
  total = timed(run, args.repeats)
  peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
  return {"images_per_s": args.batch / total, "batch_s": total, "first_call_s": warm,
          "peak_bytes": peak, "dtype": str(dtype), "device": device}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=["sd15", "tiny"], default="sd15")
  p.add_argument("--resolution", type=int, default=512)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=25)
  p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
  p.add_argument("--attention", default="auto",
                 help="auto | xla | cudnn | splash, or several comma-separated (each measured)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--torch", choices=["eager", "compile", "both", "none"], default="both")
  p.add_argument("--profile", default="", help="write a jax.profiler trace of one batch to this dir")
  args = p.parse_args()
  cfg = configs(args.model)
  out = {"bench": "generate", "model": args.model, "resolution": args.resolution,
         "batch": args.batch, "steps": args.steps, "dtype": args.dtype,
         "backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
         }
  out["jax"], out["jax_by_attention"] = by_attention(args, lambda a: bench_jax(a, cfg))
  if args.torch != "none":
    try:
      import torch  # noqa: F401
      modes = {"eager": [False], "compile": [True], "both": [False, True]}[args.torch]
      for compiled in modes:
        key = "torch_compile" if compiled else "torch_eager"
        try:
          out[key] = bench_torch(args, cfg, compiled)
        except Exception as e:  # torch.compile is missing on some platforms: record, go on
          out[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    except ImportError:
      out["torch_eager"] = {"error": "torch not installed"}
  for key in ("torch_eager", "torch_compile"):
    ref = out.get(key, {}).get("images_per_s")
    if ref and "images_per_s" in out["jax"]:
      out[f"speedup_vs_{key}"] = out["jax"]["images_per_s"] / ref
  out["host_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(json.dumps(out))


if __name__ == "__main__":
  main()
