"""LoRA fused at load vs PyTorch diffusers' load_lora_weights + fuse_lora (PEFT and kohya files)."""
import jax
import numpy as np
import pytest

from synth_jax.diffusion import loading
from synth_jax.diffusion import lora
from synth_jax.errors import ConfigError, WeightsError
from synth_jax.models import weights
from tests.diffusion_io import helpers

UNET_MODULES = ("attn1.to_q", "attn1.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.2")
TE_MODULES = ("self_attn.q_proj", "self_attn.out_proj", "mlp.fc1")


@pytest.fixture(scope="module")
def torch_sd(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("lora") / "sd")
  return path, helpers.make_torch_pipeline(path, seed=8)


def _targets(pt):
  """{(component, module name): (out, in[, kh, kw])} for the layers the test LoRAs adapt."""
  out = {}
  for name, m in pt.unet.named_modules():
    if name.endswith(UNET_MODULES) or name.endswith("proj_in"):
      out[("unet", name)] = tuple(m.weight.shape)
  for name, m in pt.text_encoder.named_modules():
    if name.endswith(TE_MODULES):
      out[("text_encoder", name)] = tuple(m.weight.shape)
  return out


def _factors(pt, rank=4):
  rng = np.random.default_rng(0)
  out = {}
  for key, shape in _targets(pt).items():
    down = (0.3 * rng.standard_normal((rank,) + shape[1:])).astype(np.float32)
    up = (0.3 * rng.standard_normal((shape[0], rank) + (1,) * (len(shape) - 2))).astype(np.float32)
    out[key] = down, up
  return out


def _write(kind, factors, path, alpha=8.0):
  tensors, meta = {}, None
  for (component, name), (down, up) in factors.items():
    if kind == "peft":
      if down.ndim == 4:  # PEFT conv LoRAs: keep this file to Linear layers
        continue
      tensors[f"{component}.{name}.lora_A.weight"] = down
      tensors[f"{component}.{name}.lora_B.weight"] = up
    else:
      prefix = {"unet": "lora_unet_", "text_encoder": "lora_te_"}[component]
      key = prefix + name.replace(".", "_")
      tensors[f"{key}.lora_down.weight"] = down
      tensors[f"{key}.lora_up.weight"] = up
      tensors[f"{key}.alpha"] = np.array(alpha, np.float32)
  if kind == "peft":  # diffusers' header: lora_alpha / r per component
    import json
    targets = {c: sorted(n for (cc, n), (d, _) in factors.items() if cc == c and d.ndim == 2)
               for c in ("unet", "text_encoder")}
    meta = {"lora_adapter_metadata": json.dumps({
        "unet.r": 4, "unet.lora_alpha": alpha, "unet.target_modules": targets["unet"],
        "text_encoder.r": 4, "text_encoder.lora_alpha": alpha / 2,
        "text_encoder.target_modules": targets["text_encoder"]})}
  weights.write_safetensors(path, tensors, meta)
  return path


@pytest.mark.parametrize("kind", ["peft", "kohya"])
def test_fused_lora_matches_diffusers(torch_sd, kind, tmp_path):
  import diffusers
  import torch
  path, pt = torch_sd
  file = _write(kind, _factors(pt), str(tmp_path / f"{kind}.safetensors"))
  ref = diffusers.StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
  ref.load_lora_weights(file)
  ref.fuse_lora(lora_scale=0.7)
  pipe = loading.load_pipeline(path)
  before = jax.tree_util.tree_map(np.copy, pipe.params)
  assert lora.fuse(pipe, file, 0.7) == ["text_encoder", "unet"]
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  ctx = rng.standard_normal((2, 77, 32)).astype(np.float32)
  ids, _ = helpers.torch_text_features(ref, ["a photo of the cat", "a dog"])
  with torch.no_grad():
    want_unet = ref.unet(torch.from_numpy(x), torch.tensor([500, 20]),
                         torch.from_numpy(ctx)).sample.numpy().transpose(0, 2, 3, 1)
    want_te = ref.text_encoder(torch.from_numpy(ids)).last_hidden_state.numpy()
  got_unet = pipe.unet.apply({"params": pipe.params["unet"]}, x.transpose(0, 2, 3, 1),
                             np.array([500, 20]), ctx)
  got_te = pipe.text_encoder.apply({"params": pipe.params["text_encoder"]}, ids)
  d_unet = helpers.max_abs(got_unet, want_unet)
  d_te = helpers.max_abs(got_te["last_hidden_state"], want_te)
  unfused = pipe.unet.apply({"params": before["unet"]}, x.transpose(0, 2, 3, 1),
                            np.array([500, 20]), ctx)
  print(f"{kind}: fused UNet max abs diff {d_unet:.1e}, text encoder {d_te:.1e} (LoRA moved the "
        f"UNet output by {helpers.max_abs(unfused, got_unet):.2f})")
  assert d_unet <= 1e-4 and d_te <= 1e-4
  assert helpers.max_abs(unfused, got_unet) > 1e-2  # the LoRA really changed something


def test_unknown_keys_and_other_architectures_are_one_line(torch_sd, tmp_path):
  path, pt = torch_sd
  factors = _factors(pt)
  (comp, name), (down, up) = next(iter(factors.items()))
  bad = dict(factors)
  bad[("unet", "down_blocks.9.attentions.0.proj_out")] = (down, up)
  file = _write("kohya", bad, str(tmp_path / "extra.safetensors"))
  pipe = loading.load_pipeline(path)
  with pytest.raises(WeightsError) as e:
    lora.fuse(pipe, file, 1.0)
  assert "1 key(s) match no layer" in str(e.value)
  assert "unet.down_blocks_9_attentions_0_proj_out" in str(e.value) and "\n" not in str(e.value)
  # an SDXL-width LoRA: every layer mis-shaped -> another architecture
  wide = {k: (np.zeros((4, d.shape[1] * 2) + d.shape[2:], np.float32), u)
          for k, (d, u) in factors.items()}
  file = _write("peft", wide, str(tmp_path / "wide.safetensors"))
  with pytest.raises(WeightsError, match="is for another architecture than this pipeline"):
    lora.fuse(pipe, file, 1.0)
  assert lora.parse_specs("a.safetensors:0.5,b.safetensors") == [("a.safetensors", 0.5),
                                                                 ("b.safetensors", 1.0)]
  with pytest.raises(ConfigError, match="scale after ':' must be a number"):
    lora.parse_specs("a.safetensors:half")


def _to_sgm(name: str, per: int = 3) -> str:
  """diffusers SDXL UNet module -> the SGM name sd-scripts writes (layers_per_block 2: per = 3),
  written out from the SGM layout (input_blocks[0] = conv_in, then per down block its
  (resnet, attention) pairs and a downsampler; output_blocks per up block (resnet, attention,
  upsampler)); diffusers' loader, not this function, decides whether it is right."""
  p = name.split(".")
  resnet = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
            "conv_shortcut": "skip_connection"}
  if p[0] == "down_blocks":
    b = int(p[1])
    if p[2] == "downsamplers":
      return f"input_blocks.{(b + 1) * per}.0.op"
    i, j = 1 + b * per + int(p[3]), {"resnets": 0, "attentions": 1}[p[2]]
    rest = p[4:]
    head = f"input_blocks.{i}.{j}"
  elif p[0] == "mid_block":
    head = "middle_block." + {("resnets", "0"): "0", ("attentions", "0"): "1",
                              ("resnets", "1"): "2"}[(p[1], p[2])]
    rest = p[3:]
  else:
    b = int(p[1])
    if p[2] == "upsamplers":
      return f"output_blocks.{b * per + per - 1}.2.conv"
    head = f"output_blocks.{b * per + int(p[3])}.{ {'resnets': 0, 'attentions': 1}[p[2]] }"
    rest = p[4:]
  rest = ".".join(rest)
  return f"{head}.{resnet.get(rest, rest)}"


@pytest.mark.slow  # ~30 s: a tiny SDXL in diffusers + PEFT
def test_kohya_sdxl_lora_with_sgm_names_fuses_like_diffusers(tmp_path):
  """sd-scripts' SDXL LoRAs name the original UNet's layers (input_blocks_4_1_...); diffusers
  renames them (_maybe_map_sgm_blocks_to_diffusers); so does lora.fuse: same fused weights."""
  import diffusers
  from synth_jax.diffusion import unet as unet_lib
  from tests.diffusion_models import sdxl_helpers
  path = str(tmp_path / "sdxl")
  pt = sdxl_helpers.make_torch_sdxl(path, seed=3)
  wanted = ("attn1.to_q", "attn2.to_k", "ff.net.2", "proj_in", "conv1", "time_emb_proj",
            "downsamplers.0.conv", "upsamplers.0.conv")
  rng = np.random.default_rng(2)
  tensors, names = {}, []
  for name, m in pt.unet.named_modules():
    if not name.endswith(wanted) or not hasattr(m, "weight"):
      continue
    shape = tuple(m.weight.shape)
    key = "lora_unet_" + _to_sgm(name).replace(".", "_")
    tensors[f"{key}.lora_down.weight"] = (0.3 * rng.standard_normal((4,) + shape[1:])).astype(np.float32)
    tensors[f"{key}.lora_up.weight"] = (0.3 * rng.standard_normal(
        (shape[0], 4) + (1,) * (len(shape) - 2))).astype(np.float32)
    tensors[f"{key}.alpha"] = np.array(8.0, np.float32)
    names.append(name)
  assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
  assert any(k.startswith("lora_unet_middle_block_") for k in tensors)
  assert any(k.startswith("lora_unet_output_blocks_") for k in tensors)
  file = str(tmp_path / "kohya_sdxl.safetensors")
  weights.write_safetensors(file, tensors)
  ref = diffusers.StableDiffusionXLPipeline.from_pretrained(path)
  ref.load_lora_weights(file)
  ref.fuse_lora(lora_scale=0.6)
  ref.unload_lora_weights()  # keeps the fused weights, drops PEFT's wrappers (plain key names)
  want = {k: v.detach().numpy() for k, v in ref.unet.state_dict().items()}
  pipe = loading.load_pipeline(path)
  assert lora.fuse(pipe, file, 0.6) == ["unet"]
  got = unet_lib.params_to_diffusers(pipe.params["unet"])
  base = {k: v.detach().numpy() for k, v in pt.unet.state_dict().items()}
  worst = max(float(np.abs(got[k] - want[k].reshape(got[k].shape)).max()) for k in got)
  changed = sorted(k for k in got if not np.allclose(got[k], base[k].reshape(got[k].shape)))
  print(f"kohya SDXL (SGM names): {len(names)} layers, fused weights max abs diff {worst:.1e}")
  assert worst <= 1e-5
  assert sorted(f"{n}.weight" for n in names) == changed
