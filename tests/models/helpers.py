"""Shared helpers for the model tests: tiny torch references saved in their own formats."""
import numpy as np


def torch_nhwc(x):
  """NHWC numpy -> NCHW torch tensor."""
  import torch
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def randomize_bn(module, seed=0):
  """Random BN statistics/affine so that eval-mode parity is not trivially the identity."""
  import torch
  g = torch.Generator().manual_seed(seed)
  for m in module.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
  return module


def images(n, size, seed=0):
  return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)
