"""Text-to-image throughput: our jitted Flax sampler vs PyTorch diffusers, same shapes, one run.

    python bench/generate.py                          # SD-1.5 shapes, 512 px, 25 steps, CFG, bf16
    python bench/generate.py --model tiny --resolution 16 --batch 2 --steps 4   # CPU smoke run
    python bench/generate.py --model sdxl --resolution 1024 --batch 4 --steps 1,2,4,8,25
    python bench/generate.py --model sdxl-tiny --resolution 16 --batch 2 --steps 1,4 --torch both

Random weights at the real shapes (speed does not depend on the values). Prints one JSON object:
images/s, UNet step ms, VAE decode ms, compile s, peak device memory, XLA's FLOP count of one UNet
step (and the TFLOP/s it achieves), where a batch's time goes (UNet loop / VAE decode / the rest),
and the same for diffusers (eager, and torch.compile where it works) when torch is installed and
--torch is not 'none'. `--profile DIR` also writes a jax.profiler trace of one batch.
`--attention xla,splash,cudnn` measures each attention kernel in the same run (`jax_by_attention`;
one this backend cannot run is recorded as unavailable, with the reason); "jax" is the first that
ran.
`--model sdxl` / `sdxl-tiny`: SDXL's shapes (bench/generate_sdxl.py), its Euler scheduler unless
--scheduler says otherwise. `--steps 1,2,4,8,25` measures every step count in the same run (one
compiled program each; the pipelines are built once): `settings` holds one entry per count (JAX,
diffusers eager / torch.compile, speedups); with one count its entry is also the top level.
`--guidance 0` (<= 1) measures the few-step way (Turbo, LCM): no unconditional half.
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
from bench import generate_sdxl  # noqa: E402

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
  if model == "sdxl":
    return dict(generate_sdxl.SDXL)
  with tempfile.TemporaryDirectory() as tok:  # the tiny vocab: ids must fit the embedding table
    tiny.write_tiny_tokenizer(tok)
    tokenizer, _ = loading.load_tokenizer(tok)
  if model == "sdxl-tiny":
    return generate_sdxl.tiny(len(tokenizer), tokenizer.eos_token_id)
  return tiny.tiny_configs(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)


def random_pipeline(cfg: dict, dtype, tok_dir: str) -> loading.StableDiffusion:
  tiny.write_tiny_tokenizer(tok_dir)
  tokenizer, files = loading.load_tokenizer(tok_dir)
  xl = "text_encoder_2" in cfg
  unet = unet_lib.UNet2DConditionModel.from_config(cfg["unet"], dtype)
  # SDXL decodes in float32 where the VAE says force_upcast and the pipeline is fp16 (loading.py)
  vae_dtype = jnp.float32 if xl and dtype == jnp.float16 else dtype
  vae = vae_lib.AutoencoderKL.from_config(cfg["vae"], vae_dtype)
  te = clip_text.CLIPTextModel.from_config(cfg["text_encoder"], dtype=dtype)

  def init(module, seed, dt=dtype):  # on device, directly in the compute dtype
    params = jax.jit(lambda k: module.init(k, *module.dummy_inputs())["params"])(
        jax.random.PRNGKey(seed))
    return jax.tree_util.tree_map(lambda x: x.astype(dt), params)
  params = {"unet": init(unet, 0), "vae": init(vae, 1, vae_dtype),
            "text_encoder": jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype),
                                                   te.init_params(2))}
  extra = {}
  if xl:
    te2 = clip_text.CLIPTextModel.from_config(cfg["text_encoder_2"], dtype=dtype)
    params["text_encoder_2"] = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype),
                                                      te2.init_params(3))
    extra = dict(text_encoder_2=te2, tokenizer_2=tokenizer, force_zeros_for_empty_prompt=True)
  return loading.StableDiffusion(unet=unet, vae=vae, text_encoder=te, params=params,
                                 tokenizer=tokenizer, scheduler_config=cfg["scheduler"],
                                 configs={k: cfg[k] for k in cfg if k != "scheduler"},
                                 dtype=dtype, tokenizer_files=files, **extra)


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


_PIPES: dict = {}  # (model, dtype) -> the random pipeline, built once for every --steps value


def scheduler_for(args) -> str | None:
  """--scheduler, else dpm++2m for SD shapes (as before) and the folder's Euler for SDXL."""
  return args.scheduler or (None if args.model.startswith("sdxl") else "dpm++2m")


def bench_jax(args, cfg) -> dict:
  dtype = DTYPES[args.dtype]
  key = (args.model, args.dtype)
  if key not in _PIPES:
    with tempfile.TemporaryDirectory() as tok:
      _PIPES[key] = random_pipeline(cfg, dtype, tok)
  pipe = _PIPES[key]
  mesh = sharding.make_mesh(None)
  g = float(args.guidance)
  s = sampler.Sampler(pipe, mesh, batch_size=args.batch, num_steps=args.steps,
                      height=args.resolution, width=args.resolution, attention=args.attention,
                      scheduler=scheduler_for(args))
  prompts = [f"a photo of a cat number {i}" for i in range(args.batch)]
  seeds = np.arange(args.batch)
  t = time.perf_counter()
  s(prompts, "", seeds, g)
  compile_s = time.perf_counter() - t
  total = timed(lambda: s(prompts, "", seeds + 1, g), args.repeats)
  if args.profile:  # one more call under the profiler: open the trace in TensorBoard / Perfetto
    with jax.profiler.trace(args.profile):
      s(prompts, "", seeds + 2, g)

  f = pipe.vae_scale_factor
  h = args.resolution // f
  n = 2 * args.batch if g > 1 else args.batch  # the UNet batch: CFG doubles it
  x = jnp.zeros((n, h, h, 4), dtype)
  ctx = jnp.zeros((n, 77, cfg["unet"]["cross_attention_dim"]), dtype)
  added = ()
  if pipe.is_xl:  # pooled text embeds + time ids
    u = cfg["unet"]
    pooled = u["projection_class_embeddings_input_dim"] - 6 * u["addition_time_embed_dim"]
    added = (jnp.zeros((n, pooled), dtype), jnp.zeros((n, 6), jnp.float32))
  unet_fn = jax.jit(lambda p, x: s.unet.apply({"params": p}, x, jnp.full((x.shape[0],), 500), ctx,
                                              *added))
  unet_flops = flops(unet_fn, s.params["unet"], x)
  unet_fn(s.params["unet"], x).block_until_ready()
  unet_s = timed(lambda: unet_fn(s.params["unet"], x).block_until_ready(), args.repeats)
  z = jnp.zeros((args.batch, h, h, 4), s.vae.dtype)
  dec = jax.jit(lambda p, z: s.vae.apply({"params": p}, z, method=s.vae.decode))
  vae_flops = flops(dec, s.params["vae"], z)
  dec(s.params["vae"], z).block_until_ready()
  vae_s = timed(lambda: dec(s.params["vae"], z).block_until_ready(), args.repeats)
  # Where a batch's time goes: the denoising loop is `steps` UNet calls (on the CFG-doubled batch
  # when guidance > 1);
  # the rest (text encoder, scheduler arithmetic, uint8 conversion, dispatch) is what is left.
  unet_total = s.plan.num_steps * unet_s
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


_TORCH_SCHEDULERS = {"dpm++2m": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler",
                     "euler": "EulerDiscreteScheduler", "euler_a": "EulerAncestralDiscreteScheduler",
                     "lcm": "LCMScheduler"}


def bench_torch(args, cfg, compile_unet: bool, steps: list[int]) -> dict:
  """diffusers on the same shapes: {steps: result} for every step count, one pipeline (and one
  torch.compile) for all of them, plus its UNet step / VAE decode ms."""
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
  kind = scheduler_for(args)
  sched_cls = getattr(diffusers, _TORCH_SCHEDULERS[kind] if kind else cfg["scheduler"]["_class_name"])
  scheduler = sched_cls.from_config(strip(cfg["scheduler"]))
  if "text_encoder_2" in cfg:
    pipe = generate_sdxl.torch_pipeline(cfg, tokenizer, scheduler)
  else:
    te_cfg = transformers.CLIPTextConfig(**cfg["text_encoder"])
    pipe = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel(**strip(cfg["unet"])),
        vae=diffusers.AutoencoderKL(**strip(cfg["vae"])),
        text_encoder=transformers.CLIPTextModel(te_cfg), tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
  pipe = pipe.to(device, dtype)
  pipe.set_progress_bar_config(disable=True)
  if compile_unet:
    pipe.unet = torch.compile(pipe.unet)
  prompts = [f"a photo of a cat number {i}" for i in range(args.batch)]
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  out = {}
  for n in steps:
    def run():
      pipe(prompts, height=args.resolution, width=args.resolution, num_inference_steps=n,
           guidance_scale=float(args.guidance), output_type="np")
      sync()
    t = time.perf_counter()
    run()
    warm = time.perf_counter() - t  # the first step count's includes torch.compile's compile
    total = timed(run, args.repeats)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    out[n] = {"images_per_s": args.batch / total, "batch_s": total, "first_call_s": warm,
              "peak_bytes": peak, "dtype": str(dtype), "device": device}
  parts = torch_parts(pipe, args, cfg, device, dtype, sync)
  for r in out.values():
    r.update(parts)
  return out


def torch_parts(pipe, args, cfg, device, dtype, sync) -> dict:
  """diffusers' UNet step and VAE decode ms on the shapes bench_jax times."""
  import torch
  h = args.resolution // pipe.vae_scale_factor
  n = 2 * args.batch if float(args.guidance) > 1 else args.batch
  x = torch.zeros((n, 4, h, h), device=device, dtype=dtype)
  ctx = torch.zeros((n, 77, cfg["unet"]["cross_attention_dim"]), device=device, dtype=dtype)
  kwargs = {}
  if "text_encoder_2" in cfg:
    u = cfg["unet"]
    pooled = u["projection_class_embeddings_input_dim"] - 6 * u["addition_time_embed_dim"]
    kwargs["added_cond_kwargs"] = {
        "text_embeds": torch.zeros((n, pooled), device=device, dtype=dtype),
        "time_ids": torch.zeros((n, 6), device=device, dtype=dtype)}
  z = torch.zeros((args.batch, 4, h, h), device=device, dtype=pipe.vae.dtype)
  with torch.no_grad():
    unet = lambda: (pipe.unet(x, 500, ctx, **kwargs), sync())  # noqa: E731
    dec = lambda: (pipe.vae.decode(z), sync())  # noqa: E731
    unet(), unet(), dec()  # twice: torch.compile may recompile on the second new call
    return {"unet_step_ms": timed(unet, args.repeats) * 1e3,
            "vae_decode_ms": timed(dec, args.repeats) * 1e3}


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=["sd15", "tiny", "sdxl", "sdxl-tiny"], default="sd15")
  p.add_argument("--resolution", type=int, default=512)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", default="25", help="a step count, or several comma-separated")
  p.add_argument("--guidance", type=float, default=7.5, help="<= 1: no unconditional half")
  p.add_argument("--scheduler", default="", help="dpm++2m | ddim | euler | euler_a | lcm "
                 "('' = dpm++2m for SD shapes, SDXL's Euler for sdxl)")
  p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
  p.add_argument("--attention", default="auto",
                 help="auto | xla | cudnn | splash, or several comma-separated (each measured)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--torch", choices=["eager", "compile", "both", "none"], default="both")
  p.add_argument("--profile", default="", help="write a jax.profiler trace of one batch to this dir")
  args = p.parse_args()
  try:
    steps = [int(x) for x in str(args.steps).split(",") if x.strip()]
    assert steps and min(steps) >= 1
  except (ValueError, AssertionError):
    p.error(f"--steps={args.steps!r}: pass step counts >= 1, e.g. 25 or 1,2,4,8,25")
  cfg = configs(args.model)
  out = {"bench": "generate", "model": args.model, "resolution": args.resolution,
         "batch": args.batch, "steps": steps if len(steps) > 1 else steps[0],
         "guidance": args.guidance, "scheduler": scheduler_for(args) or cfg["scheduler"]["_class_name"],
         "dtype": args.dtype, "backend": jax.default_backend(),
         "device": str(jax.devices()[0].device_kind)}
  settings = {}
  for n in steps:
    one = argparse.Namespace(**{**vars(args), "steps": n})
    entry = {}
    entry["jax"], entry["jax_by_attention"] = by_attention(one, lambda a: bench_jax(a, cfg))
    settings[n] = entry
  if args.torch != "none":
    try:
      import torch  # noqa: F401
      modes = {"eager": [False], "compile": [True], "both": [False, True]}[args.torch]
      for compiled in modes:
        key = "torch_compile" if compiled else "torch_eager"
        try:
          for n, r in bench_torch(args, cfg, compiled, steps).items():
            settings[n][key] = r
        except Exception as e:  # torch.compile is missing on some platforms: record, go on
          for n in steps:
            settings[n][key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    except ImportError:
      for n in steps:
        settings[n]["torch_eager"] = {"error": "torch not installed"}
  for entry in settings.values():
    for key in ("torch_eager", "torch_compile"):
      ref = entry.get(key, {}).get("images_per_s")
      if ref and "images_per_s" in entry["jax"]:
        entry[f"speedup_vs_{key}"] = entry["jax"]["images_per_s"] / ref
  out["settings"] = {str(n): e for n, e in settings.items()}
  if len(steps) == 1:  # one step count: its entry at the top level too, as before
    out.update(settings[steps[0]])
  out["host_max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print(json.dumps(out))


if __name__ == "__main__":
  main()
