"""Issue 17 point 3: the input normalisation follows the weights, one test per importer."""
import numpy as np
import pytest

from synth_jax.data import augment, mixup
from synth_jax.models import input_norm

IMAGENET = (0.485, 0.456, 0.406)


def test_torchvision_checkpoint_is_imagenet(tmp_path):
  path = tmp_path / "resnet18.pth"  # torchvision files carry no preprocessing record
  path.write_bytes(b"")
  n = input_norm.for_checkpoint(str(path), "torchvision", "resnet18")
  assert n.mean == IMAGENET and n.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("name,model,want", [
    ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_s16", (0.5, 0.5, 0.5)),
    ("resnet18.a1_in1k", "resnet18", IMAGENET)])
def test_timm_folder_records_its_pretrained_cfg(tmp_path, name, model, want):
  import timm
  from timm.models import _hub
  kw = dict(img_size=32, depth=1) if "vit" in name else {}
  m = timm.create_model(name, pretrained=False, **kw)
  _hub.save_for_hf(m, str(tmp_path))  # the hub layout: config.json + model.safetensors
  n = input_norm.for_checkpoint(str(tmp_path / "model.safetensors"), "timm", model)
  assert n.mean == pytest.approx(tuple(m.pretrained_cfg["mean"]))
  assert n.mean == pytest.approx(want)
  assert n.std == pytest.approx(m.pretrained_cfg["std"])
  assert n.source.endswith("config.json")
  # A bare file without config.json: timm's convention per architecture.
  bare = tmp_path / "bare"
  bare.mkdir()
  assert input_norm.for_checkpoint(str(bare / "x.safetensors"), "timm", model).mean == want


def test_hf_folder_reads_preprocessor_config(tmp_path):
  import transformers
  transformers.ViTImageProcessor().save_pretrained(tmp_path)  # google/vit's: 0.5 / 0.5
  n = input_norm.for_checkpoint(str(tmp_path), "hf", "vit_b16")
  assert n.mean == (0.5, 0.5, 0.5) and n.std == (0.5, 0.5, 0.5)
  # microsoft/resnet-50's preprocessor_config.json: a ConvNext processor with ImageNet stats.
  transformers.ConvNextImageProcessor(image_mean=list(IMAGENET),
                                      image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path)
  n = input_norm.for_checkpoint(str(tmp_path), "hf", "resnet50")
  assert n.mean == pytest.approx(IMAGENET)


def test_big_vision_is_minus_one_to_one(tmp_path):
  n = input_norm.for_checkpoint(str(tmp_path / "vit.npz"), "big_vision", "vit_b16")
  assert n.mean == (0.5,) * 3 and n.std == (0.5,) * 3


def test_host_and_device_normalisation_use_the_given_stats():
  img = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
  want = (img / 255.0 - 0.5) / 0.5
  np.testing.assert_allclose(augment.normalize(img, (0.5,) * 3, (0.5,) * 3), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(mixup.normalize_images(img[None], mean=(0.5,) * 3,
                                                               std=(0.5,) * 3))[0], want, atol=1e-5)
  # The default is still ImageNet's (the old behaviour, now only a default).
  np.testing.assert_allclose(augment.normalize(img), np.asarray(mixup.normalize_images(img[None]))[0],
                             atol=1e-5)


def test_trainer_takes_the_checkpoint_stats_into_every_pipeline(tmp_path):
  """A timm ViT folder: the trainer's augment config (host and device) gets 0.5/0.5."""
  import timm
  from timm.models import _hub
  from synth_jax import config as config_lib
  from synth_jax.train import stage
  from tests.train import helpers
  _hub.save_for_hf(timm.create_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False,
                                     img_size=32, depth=1), str(tmp_path))
  c = config_lib.load_config(helpers.BASE, ["model=vit_s16", "init_format=timm",
                                            f"init={tmp_path / 'model.safetensors'}"])
  assert stage._input_norm(c) == ((0.5,) * 3, (0.5,) * 3)
  assert list(c.augment.mean) == [0.5] * 3 and c.input_norm_source.endswith("config.json")
  c = config_lib.load_config(helpers.BASE, ["init=scratch"])
  c.augment.mean, c.augment.std = [0.1] * 3, [0.2] * 3  # explicit values win over the weights
  assert stage._input_norm(c) == ((0.1,) * 3, (0.2,) * 3)
