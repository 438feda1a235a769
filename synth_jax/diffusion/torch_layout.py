"""diffusers (PyTorch) state_dict names and layouts <-> our Flax parameter trees.

Our UNet/VAE modules are named after the diffusers modules, with list indices joined to the list
name (`down_blocks.0.resnets.1.conv1.weight` <-> `down_blocks_0/resnets_1/conv1/kernel`), as the
old diffusers Flax classes did. So the mapping is mechanical: the name by rule, the layout by rank
(4-d weight: conv OIHW <-> HWIO, 2-d: Linear (out, in) <-> Dense (in, out), 1-d: norm scale).
Checking is strict and done on diffusers names, so an error names the tensor as the file has it.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax
import numpy as np

from synth_jax.models import weights

# diffusers ModuleLists (and nn.Sequential inside Attention/FeedForward): their numeric children
# are joined to the name. Any other name keeps its own digits (`linear_1`, `conv1`, `norm2`).
LISTS = frozenset({"down_blocks", "up_blocks", "resnets", "attentions", "transformer_blocks",
                   "downsamplers", "upsamplers", "to_out", "net"})
_INDEXED = re.compile(r"^(.*)_(\d+)$")


def flax_path(torch_key: str, ndim: int) -> str:
  """'down_blocks.0.resnets.1.norm1.weight' (ndim 1) -> 'down_blocks_0/resnets_1/norm1/scale'."""
  parts: list[str] = []
  *body, leaf = torch_key.split(".")
  for p in body:
    if p.isdigit() and parts:
      parts[-1] += f"_{p}"
    else:
      parts.append(p)
  if leaf == "weight":
    leaf = "scale" if ndim == 1 else "kernel"
  return "/".join(parts + [leaf])


def torch_key(path: str) -> str:
  """Inverse of `flax_path`: 'to_out_0/kernel' -> 'to_out.0.weight'."""
  *body, leaf = path.split("/")
  parts = []
  for p in body:
    m = _INDEXED.match(p)
    parts.append(f"{m.group(1)}.{m.group(2)}" if m and m.group(1) in LISTS else p)
  return ".".join(parts + ["weight" if leaf in ("kernel", "scale") else leaf])


def _to_torch_array(x):
  """Flax layout -> PyTorch layout (numpy arrays, or ShapeDtypeStructs for shapes only)."""
  perm = {4: (3, 2, 0, 1), 2: (1, 0)}.get(len(x.shape))
  if isinstance(x, jax.ShapeDtypeStruct):
    return x if perm is None else jax.ShapeDtypeStruct(tuple(x.shape[i] for i in perm), x.dtype)
  x = np.asarray(x)
  return x if perm is None else np.ascontiguousarray(np.transpose(x, perm))


def _to_flax_array(x: np.ndarray) -> np.ndarray:
  if x.ndim == 4:
    return weights.conv_kernel(x)
  if x.ndim == 2:
    return weights.linear_kernel(x)
  return x


def to_torch(params: Mapping[str, Any]) -> dict[str, Any]:
  """Our param tree -> {diffusers name: array in PyTorch layout}."""
  return {torch_key(k): _to_torch_array(v) for k, v in weights.flatten(params).items()}


def from_torch(state: Mapping[str, np.ndarray], target: Mapping[str, Any], source: str,
               rename: Callable[[dict], dict] | None = None) -> dict:
  """Strictly converts a diffusers state_dict into a tree shaped like `target` (abstract ok).

  `rename` may first rewrite legacy names/layouts (old VAE attention). Missing, unexpected and
  mis-shaped tensors are all reported by `weights.merge_strict`, under their diffusers names.
  """
  state = {k: np.asarray(v) for k, v in state.items()}
  if rename is not None:
    state = rename(state)
  expected = to_torch(target)
  # Keys hold dots, never '/', so merge_strict's tree is flat: {diffusers name: array}.
  merged = weights.merge_strict(expected, state, source)
  out = {}
  for key, value in merged.items():
    arr = _to_flax_array(np.asarray(value, np.float32))
    out[flax_path(key, arr.ndim)] = arr
  return weights.unflatten(out)


def abstract_params(module, *args, method=None) -> dict:
  """Shapes of `module`'s params without computing anything (no memory at SD sizes)."""
  kw = {} if method is None else {"method": method}
  shapes = jax.eval_shape(lambda *a: module.init(jax.random.PRNGKey(0), *a, **kw), *args)
  return shapes["params"]
