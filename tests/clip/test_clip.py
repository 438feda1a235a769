"""Flax CLIP vs transformers' CLIPModel and OpenCLIP, both with random weights in their formats."""
import os

import numpy as np
import pytest

from synth_jax.errors import ConfigError, WeightsError
from synth_jax.models import clip as clip_lib
from synth_jax.models import weights
from tests.clip import helpers


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("hf_clip"))
  model = helpers.hf_clip_folder(path)
  return path, model


@pytest.fixture(scope="module")
def hf_clip(hf_folder):
  return clip_lib.load_clip(hf_folder[0], batch_size=4)


def test_hf_embeddings_match_transformers(hf_folder, hf_clip):
  import torch
  from transformers import CLIPImageProcessorPil, CLIPTokenizer
  path, model = hf_folder
  images = helpers.random_images(0, [(32, 32), (40, 57), (61, 33), (32, 32), (90, 90)])
  tok = CLIPTokenizer.from_pretrained(path)
  enc = tok(helpers.TEXTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
  pix = CLIPImageProcessorPil.from_pretrained(path)(images, return_tensors="pt")["pixel_values"]
  with torch.no_grad():
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pix)
  text = hf_clip.embed_text(helpers.TEXTS)  # 6 texts, batch 4: a full and a padded batch
  image = hf_clip.embed_images(images)
  text_diff = np.abs(text - out.text_embeds.numpy()).max()
  image_diff = np.abs(image - out.image_embeds.numpy()).max()
  print(f"HF CLIP parity: text max-abs {text_diff:.2e}, image max-abs {image_diff:.2e}")
  assert text.shape == (6, 16) and image.shape == (5, 16)
  assert text_diff <= 1e-4 and image_diff <= 1e-4
  np.testing.assert_allclose(np.linalg.norm(image, axis=-1), 1.0, atol=1e-5)
  assert hf_clip.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
  logits = hf_clip.logit_scale * image @ text.T
  np.testing.assert_allclose(logits, out.logits_per_image.numpy(), atol=1e-2)


def test_preprocess_matches_clip_image_processor_pil(hf_folder, hf_clip):
  from transformers import CLIPImageProcessorPil
  proc = CLIPImageProcessorPil.from_pretrained(hf_folder[0])
  shapes = [(32, 32), (33, 47), (100, 31), (7, 5), (64, 64)]
  for im in helpers.random_images(1, shapes):
    ref = proc(im, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    np.testing.assert_allclose(hf_clip.preprocess(im), ref, atol=1e-6, err_msg=str(im.shape))
  gray = np.random.default_rng(2).integers(0, 256, (40, 36), dtype=np.uint8)
  assert hf_clip.pixels([gray]).shape == (1, 32, 32, 3)


def test_openclip_embeddings_match_open_clip(tmp_path):
  model, path, config = helpers.openclip_checkpoint(str(tmp_path))
  clip = clip_lib.load_clip(path, model_config=config, batch_size=8)
  images = helpers.random_images(3, [(32, 32)] * 3 + [(48, 64)])
  image_diff, text_diff = helpers.openclip_max_diffs(clip, model, images, helpers.TEXTS)
  print(f"OpenCLIP parity: text max-abs {text_diff:.2e}, image max-abs {image_diff:.2e}")
  assert text_diff <= 1e-4 and image_diff <= 1e-4
  assert clip.logit_scale == pytest.approx(50.0, rel=1e-5)


def test_openclip_without_config_is_an_error(tmp_path):
  _, path, _ = helpers.openclip_checkpoint(str(tmp_path))
  with pytest.raises(ConfigError, match="model_name"):
    clip_lib.load_clip(path)
  bad = dict(helpers.OPENCLIP_CFG, vision_cfg=dict(helpers.OPENCLIP_CFG["vision_cfg"],
                                                   attentional_pool=True))
  with pytest.raises(ConfigError, match="attentional_pool"):
    clip_lib.load_clip(path, model_config=bad)


def test_missing_and_extra_tensors_are_named(hf_folder, tmp_path):
  import shutil
  src, _ = hf_folder
  dst = str(tmp_path / "broken")
  shutil.copytree(src, dst)
  state = weights.read_tensors(os.path.join(dst, "model.safetensors"))
  state.pop("vision_model.post_layernorm.bias")
  state["vision_model.extra.weight"] = np.zeros(3, np.float32)
  weights.write_safetensors(os.path.join(dst, "model.safetensors"), state)
  # The tower is a ViT: a missing tensor is named by our key and by its HF name.
  with pytest.raises(WeightsError, match=r"encoder_norm/bias \(HF vision_model\.post_layernorm\.bias\)") as e:
    clip_lib.load_clip(dst)
  assert "vision_model.extra.weight" in str(e.value)


def test_string_instead_of_list_is_an_error(hf_clip):
  from synth_jax.errors import DataError
  with pytest.raises(DataError, match="list of strings"):
    hf_clip.embed_text("a photo of a dog")
  assert hf_clip.embed_text([]).shape == (0, 16)


def test_threaded_preprocessing_and_batches_equal_one_by_one(hf_clip):
  images = helpers.random_images(5, [(40, 50)] * 9)  # >= 8: the thread pool path; 3 batches of 4
  batched = hf_clip.embed_images(np.stack(images))
  single = np.concatenate([hf_clip.embed_images(im[None]) for im in images])
  np.testing.assert_allclose(batched, single, atol=1e-6)


def test_bf16_close_to_fp32(hf_folder, hf_clip):
  clip16 = clip_lib.load_clip(hf_folder[0], dtype="bfloat16", batch_size=4)
  images = helpers.random_images(6, [(32, 32)] * 3)
  cos_img = np.sum(clip16.embed_images(images) * hf_clip.embed_images(images), -1)
  cos_txt = np.sum(clip16.embed_text(helpers.TEXTS) * hf_clip.embed_text(helpers.TEXTS), -1)
  assert cos_img.min() > 0.99 and cos_txt.min() > 0.99, (cos_img, cos_txt)


def test_openclip_hub_folder_quick_gelu(tmp_path):
  """open_clip_config.json + open_clip_model.safetensors (the hub layout), QuickGELU model."""
  import json

  import open_clip
  import torch
  from safetensors.torch import save_file
  cfg = dict(helpers.OPENCLIP_CFG, quick_gelu=True)
  torch.manual_seed(4)
  model = helpers._perturb(open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                                          quick_gelu=True), 4)
  save_file({k: v.contiguous() for k, v in model.state_dict().items()},
            str(tmp_path / "open_clip_model.safetensors"))
  (tmp_path / "open_clip_config.json").write_text(json.dumps(
      {"model_cfg": cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
  clip = clip_lib.load_clip(str(tmp_path))
  assert clip.preprocess.mean == (0.5, 0.5, 0.5)
  images = helpers.random_images(7, [(32, 32)] * 2)
  with torch.no_grad():
    ref_img = model.encode_image(torch.from_numpy(clip.pixels(images).transpose(0, 3, 1, 2)), normalize=True)
    ref_txt = model.encode_text(open_clip.tokenize(helpers.TEXTS[:3]), normalize=True)
  assert np.abs(clip.embed_images(images) - ref_img.numpy()).max() <= 1e-4
  assert np.abs(clip.embed_text(helpers.TEXTS[:3]) - ref_txt.numpy()).max() <= 1e-4


@pytest.mark.slow
def test_vit_b16_vision_tower_full_size_matches_transformers(tmp_path):
  """The real ViT-B/16 CLIP image tower shapes (the models issue's CLIP variant), strict load."""
  import torch
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

  from synth_jax.models import clip_vision
  torch.manual_seed(0)
  cfg = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=224, patch_size=16, projection_dim=512)
  ref = CLIPVisionModelWithProjection(cfg).eval()
  ref.save_pretrained(str(tmp_path), safe_serialization=True)
  state = weights.read_tensors(str(tmp_path / "model.safetensors"))
  model = clip_vision.CLIPVisionModel.from_config(cfg.to_dict(), with_projection=True)
  params = clip_vision.params_from_hf(state, model)
  x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    want = ref(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2))).image_embeds.numpy()
  import jax
  got = np.asarray(jax.jit(model.apply)({"params": params}, x)["image_embeds"])
  diff = np.abs(got - want).max()
  print(f"ViT-B/16 CLIP vision parity: max-abs {diff:.2e} (embeds up to {np.abs(want).max():.2f})")
  assert diff <= 1e-4 * max(1.0, np.abs(want).max())
