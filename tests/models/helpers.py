"""Shared helpers for the model tests: tiny torch references saved in their own formats."""
import numpy as np


def torch_nhwc(x):
  """NHWC numpy -> NCHW torch tensor."""
  import torch
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def randomize_bn(module, seed=0, residual_gain=1.0):
  """Random BN statistics/affine so that eval-mode parity is not trivially the identity.

  `residual_gain` scales the affine of each block's last BN (torchvision/timm `bn2` of a BasicBlock,
  `bn3` of a Bottleneck): deep nets (ResNet-101) otherwise grow the residual stream to ~1e6, where a
  float32 rounding difference alone exceeds an absolute 1e-4.
  """
  import torch
  g = torch.Generator().manual_seed(seed)
  last = set()
  for m in module.modules():
    if hasattr(m, "conv3") and hasattr(m, "bn3"):
      last.add(id(m.bn3))
    elif hasattr(m, "conv2") and hasattr(m, "bn2") and not hasattr(m, "conv3"):
      last.add(id(m.bn2))
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      gain = residual_gain if id(m) in last else 1.0
      with torch.no_grad():
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.weight.copy_((torch.rand(m.num_features, generator=g) + 0.5) * gain)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1 * gain)
  return module


def images(n, size, seed=0):
  return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)
