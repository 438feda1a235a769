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
