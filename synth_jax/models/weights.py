"""Reading weight files safely and merging them into a Flax parameter tree, strictly.

Every importer (diffusers, transformers, torchvision, timm, big_vision) renames tensors to Flax
paths and then calls `merge_strict`, which fails listing every missing, unexpected and mis-shaped
tensor instead of logging and going on.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Mapping

import numpy as np

from synth_jax.errors import WeightsError

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _bf16():
  import ml_dtypes
  return ml_dtypes.bfloat16


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a .safetensors file into numpy (bf16 via ml_dtypes); no torch needed."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
  except Exception:
    raise WeightsError(f"{path} is not a valid .safetensors file (bad header); re-export it") from None
  data = memoryview(raw)[8 + n:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = _bf16() if info["dtype"] == "BF16" else _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
      raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    if end > len(data):
      raise WeightsError(f"{path}: tensor {name!r} runs past the end of the file (truncated?); "
                         "download or export it again")
    out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"]).copy()
  return out


def safetensors_metadata(path: str) -> dict[str, str]:
  """The `__metadata__` strings of a .safetensors file (its header only; {} when none)."""
  try:
    with open(path, "rb") as f:
      (n,) = struct.unpack("<Q", f.read(8))
      return dict(json.loads(f.read(n)).get("__metadata__") or {})
  except (OSError, ValueError, struct.error):
    raise WeightsError(f"{path} is not a valid .safetensors file (bad header); re-export it") from None


def write_safetensors(path: str, tensors: Mapping[str, np.ndarray], metadata: dict | None = None):
  """Writes numpy arrays as .safetensors atomically (readable by torch/diffusers)."""
  from synth_jax import files
  inv = {v: k for k, v in _SAFETENSORS_DTYPES.items()}
  header, offset, blobs = {}, 0, []
  for name in sorted(tensors):
    arr = np.ascontiguousarray(tensors[name])
    code = "BF16" if arr.dtype == _bf16() else inv.get(arr.dtype.type)
    if code is None:
      raise WeightsError(f"cannot write tensor {name!r} of dtype {arr.dtype} to safetensors")
    blob = arr.tobytes()
    header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  head = json.dumps(header, separators=(",", ":")).encode()
  head += b" " * (-len(head) % 8)
  files.write_bytes(path, struct.pack("<Q", len(head)) + head + b"".join(blobs))


def read_torch(path: str, nested: bool = False) -> dict:
  """Reads a torch checkpoint with weights_only=True; anything needing arbitrary unpickling is refused.

  `nested=True` keeps the file's dict nesting (A1111 textual-inversion files), tensors as fp32.
  """
  try:
    import torch
  except ImportError:
    raise WeightsError(f"{path} is a PyTorch pickle; install torch to read it, or convert it to "
                       ".safetensors") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # UnpicklingError and friends
    raise WeightsError(f"refusing to load {path}: it needs unpickling of arbitrary objects "
                       f"({type(e).__name__}); export it as .safetensors or a plain state_dict") from None
  if nested:
    def to_np(x):
      if hasattr(x, "detach"):
        return x.detach().float().numpy()
      return {k: to_np(v) for k, v in x.items()} if isinstance(x, dict) else x
    return to_np(obj)
  for key in ("state_dict", "model", "module"):  # common wrappers
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")
  out = {}
  for k, v in obj.items():
    if hasattr(v, "detach"):
      v = v.detach().cpu()
      out[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
  return out


def read_tensors(path: str) -> dict[str, np.ndarray]:
  """Any supported weight file -> {name: numpy array}. Safetensors first; pickles only weights_only."""
  if not os.path.exists(path):
    raise WeightsError(f"weights file {path!r} does not exist; check the path")
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if path.endswith(".npz") or path.endswith(".npy"):
    try:
      with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
    except ValueError:
      raise WeightsError(f"refusing to load {path}: it contains pickled objects") from None
  if path.endswith((".bin", ".pt", ".pth", ".ckpt")):
    return read_torch(path)
  raise WeightsError(f"unknown weights format {path!r}; expected .safetensors, .bin/.pt/.pth or .npz")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  out = {}
  for k, v in tree.items():
    key = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, key))
    else:
      out[key] = v
  return out


def unflatten(flat: Mapping[str, Any]) -> dict:
  out: dict = {}
  for key, v in flat.items():
    node = out
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def merge_strict(target: Mapping[str, Any], loaded: Mapping[str, np.ndarray], source: str,
                 dont_load: tuple[str, ...] = (), dtype=None, describe=None) -> dict:
  """Fills the tree `target` (arrays or ShapeDtypeStructs) from flat `loaded` ('a/b/kernel' keys).

  Every target leaf must be present with the same shape, and every loaded tensor used, except
  paths matching a `dont_load` regex (those keep the target's value). Raises WeightsError listing
  all problems at once; `describe(key)` renders a missing or mis-shaped target key in the message
  (e.g. with the checkpoint's own name beside ours).
  """
  import re
  flat_target = flatten(target)
  skip = lambda k: any(re.fullmatch(p, k) or re.match(p, k) for p in dont_load)  # noqa: E731
  describe = describe or (lambda k: k)
  missing = [describe(k) for k in flat_target if k not in loaded and not skip(k)]
  unexpected = [k for k in loaded if k not in flat_target and not skip(k)]
  bad_shape = [f"{describe(k)}: file {tuple(loaded[k].shape)} vs model {tuple(flat_target[k].shape)}"
               for k in flat_target if k in loaded and not skip(k)
               and tuple(loaded[k].shape) != tuple(flat_target[k].shape)]
  if missing or unexpected or bad_shape:
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", bad_shape)):
      if items:
        shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
        parts.append(f"{title}: {shown}")
    raise WeightsError(f"weights {source} do not match the model; " + "; ".join(parts))
  out = {}
  for k, v in flat_target.items():
    if k in loaded and not skip(k):
      arr = np.asarray(loaded[k])
      out[k] = arr.astype(dtype or getattr(v, "dtype", arr.dtype))
    else:
      out[k] = v
  return unflatten(out)


def conv_kernel(w: np.ndarray) -> np.ndarray:
  """PyTorch conv weight OIHW -> Flax HWIO."""
  return np.transpose(w, (2, 3, 1, 0))


def linear_kernel(w: np.ndarray) -> np.ndarray:
  """PyTorch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
  return np.transpose(w)
