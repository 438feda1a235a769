"""`synth-jax plan`: XLA's FLOPs vs an analytic count, the fit verdict, and every config plans.

The analytic count intercepts every nn.Conv / nn.Dense call of the real module (2 x output
positions x kernel taps x Cin x Cout) and every attention (4 x B x heads x Tq x Tk x D for QK^T and
PV): shapes only, independent of XLA. What XLA adds on top (norms, activations, softmax) is a few
percent, hence the stated tolerances.
"""
import glob
import io
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synth_jax import config as config_lib
from synth_jax import models
from synth_jax import planner
from synth_jax.diffusion import attention
from synth_jax.diffusion import tiny
from synth_jax.diffusion import unet as unet_lib
from synth_jax.errors import ConfigError
from synth_jax.train import plan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def analytic_flops(module, *args, **kw) -> float:
  """Multiply-add FLOPs (x2) of every Conv/Dense and attention product of one forward call."""
  total = [0.0]

  def count(next_fun, args_, kwargs_, context):
    out = next_fun(*args_, **kwargs_)
    m = context.module
    if context.method_name == "__call__" and isinstance(m, nn.Conv):
      x = args_[0]
      taps = np.prod([_valid_taps(n, o, k, s, _pad_lo(m.padding, i, n, o, k, s))
                      for i, (n, o, k, s) in enumerate(zip(
                          x.shape[1:-1], out.shape[1:-1], m.kernel_size,
                          _pairs(m.strides, 1, x.ndim - 2)))])
      total[0] += 2.0 * x.shape[0] * taps * x.shape[-1] * out.shape[-1]
    if context.method_name == "__call__" and isinstance(m, nn.Dense):
      total[0] += 2.0 * np.prod(out.shape[:-1]) * args_[0].shape[-1] * out.shape[-1]
    if context.method_name == "__call__" and isinstance(m, attention.Attention):
      x, ctx = args_[0], (args_[1] if len(args_) > 1 and args_[1] is not None else args_[0])
      total[0] += 4.0 * x.shape[0] * x.shape[1] * ctx.shape[1] * m.heads * m.dim_head
    return out

  with nn.intercept_methods(count):
    jax.eval_shape(lambda: module(*args, **kw))
  return total[0]


def _pairs(v, default, n):
  if v is None:
    return [default] * n
  if isinstance(v, int):
    return [v] * n
  return list(v)


def _pad_lo(padding, i, n, o, k, s) -> int:
  if padding == "SAME":  # XLA's rule: the extra pad goes to the high side
    return max((o - 1) * s + k - n, 0) // 2
  if padding == "VALID":
    return 0
  if isinstance(padding, int):
    return padding
  p = padding[i]
  return p if isinstance(p, int) else p[0]


def _valid_taps(n_in, n_out, k, stride, pad_lo) -> int:
  """Kernel taps that land inside the input, summed over output positions (XLA does not count
  multiplications with the zero padding, so neither does this)."""
  return sum(0 <= o * stride - pad_lo + j < n_in for o in range(n_out) for j in range(k))


def _config(spec, *overrides):
  return config_lib.load_config(os.path.join(ROOT, spec), list(overrides))


@pytest.mark.slow  # compiles the tiny text encoder, UNet and VAE: ~60-200 s on 2 busy cores
def test_unet_flops_match_analytic_count():
  cfg = _config("configs/generate/base.py:model=tiny,resolution=16", "--config.batch_size=2",
                "--config.dtype=float32")
  out = io.StringIO()
  result = plan.plan(cfg, chips=("v5e",), out=out)
  unet = unet_lib.UNet2DConditionModel.from_config(tiny.tiny_configs()["unet"])
  params = unet.init_params(0)
  args = (jnp.zeros((4, 8, 8, 4)), jnp.zeros((4,), jnp.int32), jnp.zeros((4, 77, 32)))
  want = analytic_flops(lambda *a: unet.apply({"params": params}, *a), *args)
  got = result["parts"]["unet"]["flops"]
  print(f"tiny UNet (CFG batch 4): XLA {got:.4g} FLOPs, analytic {want:.4g} ({got / want:.3f}x)")
  assert 1.0 <= got / want <= 1.15
  # the printed JSON is the returned plan
  assert json.loads(out.getvalue().strip().splitlines()[-1])["flops_per_image"] == pytest.approx(
      result["flops_per_image"])


@pytest.mark.slow  # ~90 s on 2 busy cores (compiles a train step)
def test_resnet_train_step_flops_match_analytic_count():
  cfg = _config("configs/train/base.py:init=scratch,image_size=32,batch_size=8",
                "--config.model=resnet:basic:1,1,1,1")
  result = plan.plan(cfg, chips=("h100",), out=io.StringIO())
  model, params, stats = models.ResNetVariant("basic:1,1,1,1").init(
      jax.random.PRNGKey(0), num_classes=1000, image_size=32)
  fwd = analytic_flops(lambda x: model.apply({"params": params, "batch_stats": stats}, x,
                                             train=False), jnp.zeros((1, 32, 32, 3)))
  ratio = result["flops_per_image"] / fwd
  print(f"ResNet(1,1,1,1) train step: {result['flops_per_image']:.4g} FLOPs/image, "
        f"analytic forward {fwd:.4g} ({ratio:.2f}x)")
  # forward + input gradient + weight gradient = 3x the forward's products (the stem has no input
  # gradient, so a bit less), plus BN/ReLU/optimizer elementwise work
  assert 2.6 <= ratio <= 3.3


@pytest.mark.slow  # ~30-45 s on 2 busy cores (compiles a train step)
def test_batch_that_cannot_fit_is_reported():
  cfg = _config("configs/train/base.py:init=scratch,image_size=32,batch_size=65536",
                "--config.model=resnet:basic:1,1,1,1")
  out = io.StringIO()
  result = plan.plan(cfg, chips=("v5e", "h100"), out=out)
  fits = {r["chip"]: r["fits"] for r in result["chips"]}
  print(f"peak {result['peak_bytes'] / 2**30:.1f} GiB; fits: {fits}")
  assert 16 * 2**30 < result["peak_bytes"] < 80 * 2**30
  assert fits == {"v5e": False, "h100": True}
  assert "v5e (16 GiB)            DOES NOT FIT" in out.getvalue()


def test_roofline_and_chip_table():
  h100 = planner.chip("h100")
  r = planner.roofline(989e12, 1.0, 0, 10, h100)  # one second of peak compute, 10 images
  assert r["bound"] == "compute" and r["images_per_s_per_device"] == pytest.approx(10.0)
  assert not planner.roofline(1.0, 1.0, 17 * 2**30, 1, planner.chip("v5e"))["fits"]  # 16 GiB
  assert planner.roofline(1.0, 1.0, 17 * 2**30, 1, planner.chip("v6e"))["fits"]  # 32 GiB
  with pytest.raises(ConfigError, match="chip 'tpu9' is unknown"):
    planner.chip("tpu9")


# Each config's own shapes would take minutes to compile on the CPU: the model is made tiny here
# (the test is that plan runs for every config, not what it says about SD-1.5).
TINY = {"generate": ["--config.model_path=tiny", "--config.resolution=16", "--config.batch_size=2"],
        "finetune": ["--config.model_path=tiny", "--config.resolution=16", "--config.batch_size=2"],
        "invert": ["--config.model_path=tiny", "--config.resolution=16", "--config.batch_size=2"],
        "train": ["--config.model=resnet:basic:1,1,1,1", "--config.augment.resolution=32",
                  "--config.batch_size=2"]}
CONFIGS = sorted(os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "configs/**/*.py"),
                                                              recursive=True)
                 if os.path.basename(f) not in ("common.py", "from_json.py"))


@pytest.mark.slow
@pytest.mark.parametrize("spec", CONFIGS)
def test_plan_runs_for_every_config(spec):
  base = _config(spec)
  try:
    stage = plan.stage_of(base)
  except ConfigError:
    # not a plannable stage: configs/{data,filter,prompts}/ and the study's prompts config
    assert (spec.split("/")[1] in ("data", "filter", "prompts")
            or os.path.basename(spec) == "prompts.py"), spec
    return
  result = plan.plan(_config(spec, *TINY[stage]), chips=("v5e",), out=io.StringIO())
  assert result["stage"] == stage and result["flops_per_image"] > 0 and result["peak_bytes"] > 0
