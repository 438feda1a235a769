"""Stable Diffusion from a diffusers-layout folder, and back.

`load_pipeline(path)` reads `model_index.json`, `unet/`, `vae/`, `text_encoder/`, `tokenizer/` and
`scheduler/` (weights as *.safetensors, or *.bin through `torch.load(weights_only=True)`), converts
PyTorch layouts to our Flax trees strictly (a missing, extra or mis-shaped tensor is a WeightsError
that names it) and returns numpy params on the host: placing them on devices is the sampler's job.
`save_pipeline(pipe, path)` writes the same layout, loadable by PyTorch diffusers. `load(path)` also
takes a single-file (original LDM layout) checkpoint, converted by diffusers (`load_single_file`).
An SDXL folder (`text_encoder_2/`, `tokenizer_2/`, a text_time UNet) loads the same way; its second
encoder and tokenizer are `text_encoder_2` / `tokenizer_2`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import files
from synth_jax.errors import WeightsError
from synth_jax.models import clip_text
from synth_jax.models import weights

LAYOUT = "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/"
_WEIGHT_NAMES = {  # component -> file stems (safetensors, bin), in diffusers/transformers naming
    "unet": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "vae": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "text_encoder": ("model", "pytorch_model"), "text_encoder_2": ("model", "pytorch_model")}
_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "added_tokens.json")


@dataclasses.dataclass
class StableDiffusion:
  """A loaded pipeline: Flax modules, numpy params, tokenizer and configs."""
  unet: Any
  vae: Any
  text_encoder: clip_text.CLIPTextModel
  params: dict  # {'unet', 'vae', 'text_encoder'}: numpy trees on the host
  tokenizer: Any  # transformers CLIPTokenizer
  scheduler_config: dict
  configs: dict  # {'model_index', 'unet', 'vae', 'text_encoder'}: the json dicts as read
  dtype: Any = jnp.float32
  tokenizer_files: dict = dataclasses.field(default_factory=dict)  # name -> bytes, as read
  # SDXL: the OpenCLIP bigG encoder with projection (params['text_encoder_2']) and its tokenizer
  text_encoder_2: clip_text.CLIPTextModel | None = None
  tokenizer_2: Any = None
  force_zeros_for_empty_prompt: bool = False  # SDXL: an empty negative prompt is zeros

  @property
  def is_xl(self) -> bool:
    return self.text_encoder_2 is not None

  @property
  def prediction_type(self) -> str:
    return self.scheduler_config.get("prediction_type", "epsilon")

  @property
  def vae_scale_factor(self) -> int:
    return 2 ** (len(self.configs["vae"]["block_out_channels"]) - 1)

  @property
  def vae_scaling_factor(self) -> float:
    return float(self.configs["vae"].get("scaling_factor", 0.18215))

  @property
  def sample_size(self) -> int:
    """Default image side in pixels (latent sample_size times the VAE factor)."""
    size = self.configs["unet"].get("sample_size", 64)
    return (size[0] if isinstance(size, (list, tuple)) else size) * self.vae_scale_factor

  @property
  def max_length(self) -> int:
    return min(self.tokenizer.model_max_length, self.text_encoder.max_position_embeddings)


def _read_json(path: str, what: str) -> dict:
  if not os.path.isfile(path):
    raise WeightsError(f"{path} is missing; a diffusers folder needs {what} there ({LAYOUT})")
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError:
    raise WeightsError(f"{path} is not valid JSON; re-export the pipeline") from None


def _find_weights(folder: str, stems: tuple[str, str], variant: str | None) -> list[str]:
  """The weight file(s) of one component: safetensors first, sharded index files too."""
  suffixes = [f".{variant}", ""] if variant else [""]
  names = [f"{stem}{suffix}{ext}" for suffix in suffixes
           for stem, ext in zip(stems, (".safetensors", ".bin"))]
  for name in names:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return [path]
    if os.path.isfile(path + ".index.json"):  # sharded: the index maps tensors to shard files
      with open(path + ".index.json") as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      return [os.path.join(folder, s) for s in shards]
  raise WeightsError(f"no weights in {folder}: expected {' or '.join(names)} (or a sharded "
                     ".index.json); re-export the pipeline with save_pretrained")


def read_component_weights(folder: str, component: str, variant: str | None = None
                           ) -> tuple[dict[str, np.ndarray], str]:
  """All tensors of component `unet`/`vae`/`text_encoder` in `folder`, and their source name."""
  paths = _find_weights(folder, _WEIGHT_NAMES[component], variant)
  state: dict[str, np.ndarray] = {}
  for path in paths:
    state.update(weights.read_tensors(path))
  return state, paths[0] if len(paths) == 1 else f"{folder} ({len(paths)} shards)"


def cast_params(tree, dtype):
  """Floating leaves to `dtype` (bf16 via ml_dtypes), on the host."""
  dt = np.dtype(jnp.dtype(dtype))
  def cast(x):
    x = np.asarray(x)
    return x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


def _convert(fn, state, config, source):
  try:
    return fn(state, config)
  except WeightsError as e:
    raise WeightsError(f"{source}: {e}") from None


def load_pipeline(path: str, dtype=jnp.float32, variant: str | None = None) -> StableDiffusion:
  """Loads a diffusers Stable Diffusion folder into Flax modules and numpy params."""
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.diffusion import vae as vae_lib
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise WeightsError(f"pipeline folder {path!r} does not exist; pass a diffusers folder ({LAYOUT})")
  model_index = _read_json(os.path.join(path, "model_index.json"), "the component list")
  configs = {"model_index": model_index}
  params = {}
  xl = "XL" in str(model_index.get("_class_name", "")) or bool(
      (model_index.get("text_encoder_2") or [None])[0])
  if xl and not os.path.isfile(os.path.join(path, "text_encoder_2", "config.json")):
    raise WeightsError(f"{path} is an SDXL pipeline without text_encoder_2/ (its second, OpenCLIP "
                       "bigG text encoder); download the complete folder (text_encoder_2/ and "
                       "tokenizer_2/ included)")
  # SDXL's pipeline decodes in float32 where the VAE says force_upcast and the pipeline is fp16
  vae_dtype = jnp.float32 if (xl and jnp.dtype(dtype) == jnp.float16) else dtype
  for name in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if xl else ()):
    folder = os.path.join(path, name)
    configs[name] = _read_json(os.path.join(folder, "config.json"), f"the {name} config")
    state, source = read_component_weights(folder, name, variant)
    if name.startswith("text_encoder"):
      params[name] = clip_text.params_from_hf(state, configs[name], source)
    else:
      lib = unet_lib if name == "unet" else vae_lib
      params[name] = _convert(lib.params_from_diffusers, state, configs[name], source)
    if name == "vae" and not configs["vae"].get("force_upcast", True):
      vae_dtype = dtype
    params[name] = cast_params(params[name], vae_dtype if name == "vae" else dtype)
  scheduler_config = _read_json(os.path.join(path, "scheduler", "scheduler_config.json"),
                                "the scheduler config")
  tokenizer, tokenizer_files = load_tokenizer(os.path.join(path, "tokenizer"))
  extra = {}
  if xl:
    extra = dict(
        text_encoder_2=clip_text.CLIPTextModel.from_config(configs["text_encoder_2"], dtype=dtype),
        tokenizer_2=load_tokenizer(os.path.join(path, "tokenizer_2"))[0],
        force_zeros_for_empty_prompt=bool(model_index.get("force_zeros_for_empty_prompt", True)))
  return StableDiffusion(
      unet=unet_lib.UNet2DConditionModel.from_config(configs["unet"], dtype),
      vae=vae_lib.AutoencoderKL.from_config(configs["vae"], vae_dtype),
      text_encoder=clip_text.CLIPTextModel.from_config(configs["text_encoder"], dtype=dtype),
      params=params, tokenizer=tokenizer, scheduler_config=scheduler_config, configs=configs,
      dtype=dtype, tokenizer_files=tokenizer_files, **extra)


def load_tokenizer(folder: str):
  """transformers CLIPTokenizer from `folder`, plus the raw files (kept so saving can copy them)."""
  from transformers import CLIPTokenizer
  if not (os.path.isfile(os.path.join(folder, "tokenizer.json")) or
          all(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt"))):
    raise WeightsError(f"tokenizer folder {folder} needs vocab.json + merges.txt (or "
                       "tokenizer.json); copy the tokenizer/ folder of the pipeline")
  contents = {}
  for name in _TOKENIZER_FILES:
    p = os.path.join(folder, name)
    if os.path.isfile(p):
      with open(p, "rb") as f:
        contents[name] = f.read()
  return CLIPTokenizer.from_pretrained(folder), contents


def _model_index(pipe: StableDiffusion) -> dict:
  index = {k: v for k, v in pipe.configs.get("model_index", {}).items()}
  index.setdefault("_class_name", "StableDiffusionPipeline")
  index.setdefault("_diffusers_version", "0.30.0")
  index.update({
      "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
      "text_encoder": ["transformers", "CLIPTextModel"],
      "tokenizer": ["transformers", "CLIPTokenizer"],
      "scheduler": ["diffusers", pipe.scheduler_config.get("_class_name", "PNDMScheduler")]})
  for optional in ("safety_checker", "feature_extractor"):  # we never ship these
    index[optional] = [None, None]
  index.setdefault("image_encoder", [None, None])
  index["requires_safety_checker"] = False
  return index


def _write_tree(pipe: StableDiffusion, out: str) -> None:
  from synth_jax.diffusion import unet as unet_lib
  from synth_jax.diffusion import vae as vae_lib
  files.write_json(os.path.join(out, "model_index.json"), _model_index(pipe))
  meta = {"format": "pt"}  # transformers refuses safetensors without it
  for name, lib in (("unet", unet_lib), ("vae", vae_lib)):
    config = dict(pipe.configs[name])
    config.setdefault("_class_name", "UNet2DConditionModel" if name == "unet" else "AutoencoderKL")
    config.setdefault("_diffusers_version", "0.30.0")
    files.write_json(os.path.join(out, name, "config.json"), config)
    state = lib.params_to_diffusers(pipe.params[name], pipe.configs[name])
    weights.write_safetensors(os.path.join(out, name, "diffusion_pytorch_model.safetensors"),
                              state, meta)
  te_config = dict(pipe.configs["text_encoder"])
  te_config["vocab_size"] = int(
      pipe.params["text_encoder"]["embeddings"]["token_embedding"]["embedding"].shape[0])
  files.write_json(os.path.join(out, "text_encoder", "config.json"), te_config)
  weights.write_safetensors(os.path.join(out, "text_encoder", "model.safetensors"),
                            clip_text.params_to_hf(pipe.params["text_encoder"]), meta)
  files.write_json(os.path.join(out, "scheduler", "scheduler_config.json"), pipe.scheduler_config)
  tok_dir = os.path.join(out, "tokenizer")
  pipe.tokenizer.save_pretrained(tok_dir)
  # transformers 5 writes only tokenizer.json; older readers (slow CLIPTokenizer) need vocab.json
  # and merges.txt, so copy the ones we read. Added tokens live in tokenizer_config.json.
  for name in ("vocab.json", "merges.txt"):
    if name in pipe.tokenizer_files and not os.path.exists(os.path.join(tok_dir, name)):
      files.write_bytes(os.path.join(tok_dir, name), pipe.tokenizer_files[name])


def save_pipeline(pipe: StableDiffusion, path: str) -> None:
  """Writes `pipe` as a diffusers folder; readers see the old folder or the complete new one."""
  if pipe.is_xl:
    raise WeightsError(f"saving an SDXL pipeline ({path}) is not supported yet; keep the "
                       "original diffusers folder")
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    _write_tree(pipe, tmp)
    os.chmod(tmp, 0o755)
    if os.path.exists(path):  # swap: old aside, new in, old gone
      old = tmp + ".old"
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      shutil.rmtree(tmp)
    raise


def load(path: str, dtype=jnp.float32, single_file_config: str | None = None,
         revision: str | None = None, variant: str | None = None) -> StableDiffusion:
  """A diffusers folder (`load_pipeline`), a single-file checkpoint (`load_single_file`), or a
  Hub id `org/name` (at `revision`; weights of `variant`, e.g. 'fp16') resolved through the
  Hugging Face cache as diffusers does (`hub.resolve`)."""
  from synth_jax.diffusion import hub
  path = os.path.expanduser(os.fspath(path))
  if os.path.isfile(path):
    return load_single_file(path, dtype, config=single_file_config or None)
  if hub.is_hub_id(path):
    path = hub.resolve(path, revision or None, variant or None)
  return load_pipeline(path, dtype, variant=variant or None)


def load_single_file(checkpoint: str, dtype=jnp.float32, config: str | None = None,
                     workdir: str | None = None, **kwargs) -> StableDiffusion:
  """A single-file SD checkpoint (original LDM key layout), converted by PyTorch diffusers.

  Needs torch and diffusers. `config` is a diffusers folder (or hub id) whose model_index.json,
  component configs, tokenizer and scheduler describe the checkpoint's architecture; None lets
  diffusers guess the architecture from the tensor names and fetch that repo's configs from the
  hub (or its cache). .safetensors is read as is; .ckpt only through torch.load(weights_only=True)
  (diffusers' reader). The converted pipeline is saved as a diffusers folder under `workdir` (a
  temp dir, removed once loaded, if None) and loaded from there, so the Flax side only ever reads
  the folder layout.
  """
  try:
    from diffusers import StableDiffusionPipeline
  except ImportError:
    raise WeightsError(f"{checkpoint} is a single-file checkpoint; install torch and diffusers "
                       "to convert it, or pass a diffusers folder") from None
  if not os.path.isfile(checkpoint):
    raise WeightsError(f"checkpoint {checkpoint!r} does not exist; check the path")
  if config:
    kwargs["config"] = os.path.expanduser(config)
  try:
    pt = StableDiffusionPipeline.from_single_file(checkpoint, safety_checker=None, **kwargs)
  except Exception as e:  # diffusers raises many types for unrecognised checkpoints
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise WeightsError(f"diffusers could not convert {checkpoint} ({type(e).__name__}: {first}); "
                       "pass single_file_config=<diffusers folder with the same architecture>, "
                       "or convert it to a diffusers folder first") from None
  with contextlib.ExitStack() as stack:
    root = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="synth_jax_sd_"))
    folder = os.path.join(root, "pipeline")
    pt.save_pretrained(folder, safe_serialization=True)
    return load_pipeline(folder, dtype=dtype)
