"""What a compiled step costs: FLOPs, bytes, peak memory, largest buffers, fit and a roofline.

Everything here reads a compiled XLA executable (`jax.jit(f).lower(*ShapeDtypeStructs).compile()`)
and never runs it, so a plan needs no weights and no accelerator. Figures come from the backend the
program was compiled for (the CPU when planning on a laptop): FLOPs are nearly backend-independent,
bytes accessed and memory depend on the backend's fusion and layout, so the per-chip columns are
estimates (a roofline: time = max(FLOPs / peak, bytes / bandwidth)), not measurements.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from synth_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: dense bf16 peak, HBM size and bandwidth (vendor public specs)."""
  name: str
  bf16_tflops: float
  hbm_gib: float
  hbm_gbps: float  # GB/s


# Dense (no sparsity) bf16 matmul peaks per chip. NVIDIA: H100 SXM5 80 GB and A100 SXM4 80 GB
# datasheets; Google Cloud TPU system-architecture pages for v5e, v5p and v6e (Trillium).
CHIPS = {c.name: c for c in [
    Chip("h100", 989.0, 80.0, 3350.0),
    Chip("a100", 312.0, 80.0, 2039.0),
    Chip("v5e", 197.0, 16.0, 819.0),
    Chip("v5p", 459.0, 95.0, 2765.0),
    Chip("v6e", 918.0, 32.0, 1640.0),
]}


def chip(name: str) -> Chip:
  if name not in CHIPS:
    raise ConfigError(f"chip {name!r} is unknown; use one of {', '.join(CHIPS)}")
  return CHIPS[name]


_SHAPE = re.compile(r"=\s*(pred|s8|u8|s16|u16|bf16|f16|s32|u32|f32|s64|u64|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def largest_buffers(hlo_text: str, n: int = 5) -> list[dict]:
  """The n largest array values of an optimized HLO module, by bytes.

  Parsed from the instruction result shapes of `compiled.as_text()` (the buffer assignment itself
  is not exposed): a value that XLA aliases or keeps in a fusion still shows here, so read it as
  "the largest arrays the program materialises", an upper bound on what one buffer holds.
  """
  found = {}
  for line in hlo_text.splitlines():
    m = _SHAPE.search(line)
    if not m:
      continue
    dims = [int(d) for d in m.group(2).split(",") if d]
    size = _BYTES[m.group(1)]
    for d in dims:
      size *= d
    name = line.split("=")[0].strip().removeprefix("ROOT ").strip()
    key = (m.group(1), tuple(dims))
    if key not in found or found[key]["bytes"] < size:
      found[key] = {"shape": f"{m.group(1)}[{','.join(map(str, dims))}]", "bytes": size,
                    "example": name}
  return sorted(found.values(), key=lambda b: -b["bytes"])[:n]


def analyse(compiled) -> dict:
  """{flops, bytes_accessed, peak_bytes, argument/output/temp bytes, largest} of one executable."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per computation
    cost = cost[0] if cost else {}
  mem = compiled.memory_analysis()
  args, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
  temp, alias = mem.temp_size_in_bytes, mem.alias_size_in_bytes
  return {"flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
          "peak_bytes": int(args + out + temp - alias), "argument_bytes": int(args),
          "output_bytes": int(out), "temp_bytes": int(temp),
          "largest": largest_buffers(compiled.as_text())}


def roofline(flops_per_step: float, bytes_per_step: float, peak_bytes: int,
             images_per_step_per_device: float, c: Chip) -> dict:
  """Fit (peak memory vs HBM) and images/s per device of a step on chip `c`."""
  compute_s = flops_per_step / (c.bf16_tflops * 1e12)
  memory_s = bytes_per_step / (c.hbm_gbps * 1e9)
  step_s = max(compute_s, memory_s)
  return {"chip": c.name, "fits": peak_bytes <= c.hbm_gib * 2**30,
          "hbm_gib": c.hbm_gib, "peak_gib": peak_bytes / 2**30,
          "bound": "compute" if compute_s >= memory_s else "memory",
          "step_s": step_s, "images_per_s_per_device":
              images_per_step_per_device / step_s if step_s else float("inf")}


def format_table(plan: dict) -> str:
  """The plan as an aligned text table (one row per figure, then one row per chip)."""
  gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
  rows = [("stage", plan["stage"]), ("per-device batch", str(plan["per_device_batch"])),
          ("GFLOPs / image", f"{plan['flops_per_image'] / 1e9:,.1f}"),
          ("bytes accessed / image", gib(plan["bytes_per_image"])),
          ("peak memory / device", gib(plan["peak_bytes"]))]
  rows += [(f"buffer {i + 1}", f"{b['shape']} {gib(b['bytes'])}")
           for i, b in enumerate(plan["largest"])]
  for r in plan["chips"]:
    rows.append((f"{r['chip']} ({r['hbm_gib']:.0f} GiB)",
                 f"{'fits' if r['fits'] else 'DOES NOT FIT'}, ~{r['images_per_s_per_device']:.2f}"
                 f" img/s/chip ({r['bound']}-bound, estimate)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
