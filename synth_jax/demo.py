"""`synth-jax demo`: the whole pipeline on a laptop CPU in a few minutes.

real data (scikit-learn digits as a tfds dataset) -> a Stable Diffusion folder (the shipped small
generator, synth_jax/assets/digits_generator: trained from scratch by `synth-jax finetune` on
digits disjoint from the demo's test split, see its TRAINED.md; `model_path=untrained` builds a
tiny *untrained* one on the spot; any other value is your own diffusers folder) -> `generate`
(template prompts, the jitted sampler, a tfds synthetic dataset + contact_sheet.png, one row per
digit) -> `train` with vanilla, mix and bridged++ on a 10-shot subset -> results.md, accuracy.png.

With the untrained generator the synthetic images are noise, so the numbers show only that every
stage runs; with a real SD folder (`--config.model_path=/models/sd15 --config.resolution=512`) the
same command does the real thing.
Every stage resumes: rerunning after an interruption continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import os

import ml_collections

from synth_jax import config as config_lib
from synth_jax import files
from synth_jax import runs
from synth_jax.errors import ConfigError

log = logging.getLogger(__name__)
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.workdir = "runs/demo"
  c.seed = 0
  c.model_path = ""           # '' = the shipped generator (else untrained); 'untrained'; or a diffusers folder
  c.resolution = 0            # generated image side; 0 = the generator's own (16 px shipped, 32 untrained)
  c.images_per_class = 24
  c.steps = 20                # sampler steps (ours, like the shipped generator's CAS)
  c.guidance = 7.5            # diffusers' default; the shipped generator's CAS (88.5%) is at 7.5
  c.batch_size = 8
  c.template = "a photo of the handwritten digit {}"
  c.methods = "vanilla,mix,bridged++"
  c.shots = 10                # real images per class (the few-shot regime synthetic data helps)
  c.phase1_steps = 50         # synthetic phase of bridged
  c.phase2_steps = 100        # real phase (and the single phase of vanilla / mix)
  c.train_resolution = 16     # classifier input side (a tiny ResNet; 16 px keeps it CPU-fast)
  c.train_batch_size = 32
  return c


def _load(relpath: str, arg: str | None = None) -> ml_collections.ConfigDict:
  path = os.path.join(CONFIGS, relpath)
  if not os.path.isfile(path):
    raise ConfigError(f"{path} is missing; the demo runs from a source checkout "
                      "(pip install -e . in the repository)")
  return config_lib.load_config(path if arg is None else f"{path}:{arg}")


SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "digits_generator")


def _about(model: str) -> str:
  """The first line of a generator folder's TRAINED.md (what it was trained on), or ''."""
  path = os.path.join(model, "TRAINED.md")
  if not os.path.isfile(path):
    return ""
  with open(path) as f:
    return f.readline().strip()


def _model(config, workdir: str) -> str:
  if config.model_path and config.model_path != "untrained":
    return config.model_path
  if not config.model_path and os.path.isfile(os.path.join(SHIPPED, "model_index.json")):
    print(f"generator: {_about(SHIPPED) or 'the shipped digits generator'}", flush=True)
    return SHIPPED
  from synth_jax.diffusion import tiny
  path = os.path.join(workdir, "tiny_sd")
  if not os.path.exists(os.path.join(path, "model_index.json")):
    tiny.make_tiny_pipeline(path, seed=config.seed, sample_size=(config.resolution or 32) // 2)
  print("NOTE: the generator is a tiny *untrained* Stable Diffusion built for this demo, so its "
        "images are noise;\n      pass --config.model_path=/path/to/diffusers/sd-folder "
        "(and --config.resolution=512) for real synthetic data.", flush=True)
  return path


def _generate_config(config, workdir: str, model: str):
  from synth_jax.data import digits
  g = _load("generate/base.py")
  g.workdir = os.path.join(workdir, "generate")
  g.model_path = model
  g.class_names = ",".join(digits.CLASS_NAMES)
  # the shipped generator's captions read "a digit three" (synth_jax/data/digit_styles.py)
  g.template = "a digit {}" if model == SHIPPED else config.template
  g.images_per_class = config.images_per_class
  g.resolution = config.resolution
  g.steps = config.steps
  g.guidance = config.guidance
  g.batch_size = config.batch_size
  g.dtype = "float32"  # CPU: bf16 convolutions are slower there than fp32
  g.images_per_shard = 64
  g.seed = config.seed
  return g


def _generate(config, workdir: str, model: str) -> str:
  from synth_jax.diffusion import generate as generate_lib
  return runs.run_stage("generate", generate_lib.generate, _generate_config(config, workdir, model))


def _train_config(config, workdir: str, method: str, real: str, synthetic: str):
  t = _load("train/base.py", f"method={method},smoke")
  t.workdir = os.path.join(workdir, "train", method)
  t.dataset = real
  t.synthetic = synthetic if method != "vanilla" else ""
  t.shots = config.shots
  t.augment.resolution = config.train_resolution
  t.batch_size = config.train_batch_size
  t.seed = config.seed
  t.phase1.steps = config.phase1_steps
  t.phase2.steps = config.phase2_steps
  t.checkpoint_every = 50
  return t


def _train(config, workdir: str, method: str, real: str, synthetic: str) -> dict:
  from synth_jax.train import stage as train_lib
  return runs.run_stage("train", train_lib.train,
                        _train_config(config, workdir, method, real, synthetic))


def methods_of(config) -> list[str]:
  return [m.strip() for m in str(config.methods).split(",") if m.strip()]


def validate(config) -> None:
  """The demo's fields, then every stage config it will run (checks.VALIDATORS["demo"])."""
  from synth_jax import checks, sharding
  from synth_jax.checks import Float, Int, Text
  from synth_jax.diffusion import generate as generate_lib
  from synth_jax.train import checks as train_checks
  checks.check(config, {
      "seed": Int(0, 2**32 - 1, 0), "model_path": Text(), "resolution": Int(0, 1024, 32),
      "images_per_class": Int(1, 10**5, 24), "steps": Int(1, 1000, 8),
      "guidance": Float(0, 50, 5.0), "batch_size": Int(1, 4096, 8), "template": Text(True),
      "methods": Text(True, "vanilla,bridged"), "shots": Int(1, 10**5, 10),
      "phase1_steps": Int(1, 10**7, 50), "phase2_steps": Int(1, 10**7, 100),
      "train_resolution": Int(8, 1024, 16), "train_batch_size": Int(1, 4096, 32)})
  methods = methods_of(config)
  if not methods:
    raise ConfigError("methods='' names no method; pass e.g. --config.methods=vanilla,bridged")
  if len(set(methods)) != len(methods):
    raise checks.bad("methods", config.methods, "names a method twice", "vanilla,bridged")
  if config.model_path and not os.path.isdir(os.path.expanduser(config.model_path)):
    raise checks.bad("model_path", config.model_path, "is not a diffusers folder", "/models/sd15")
  workdir = runs.workdir(config)
  generate_lib.validate(_generate_config(config, workdir, config.model_path or "tiny"))
  mesh = sharding.make_mesh(None)
  for m in methods:  # every point before the first runs
    if m not in train_checks.METHODS:
      raise checks.bad("methods", config.methods, f"names {m!r}, not one of "
                       f"{', '.join(train_checks.METHODS)}", "vanilla,mix,bridged")
    t = _train_config(config, workdir, m, "digits", "synthetic")
    train_checks.values(t)
    sharding.check_batch(mesh, t.batch_size, "train_batch_size")


def _report(workdir: str, results: dict[str, dict], untrained: bool, model: str) -> str:
  lines = ["# synth-jax demo: digits, 10-shot", "", f"Generator: {_about(model) or model}", ""]
  if os.path.isfile(os.path.join(workdir, "contact_sheet.png")):
    lines += ["![synthetic images, one row per digit](contact_sheet.png)", ""]
  lines += ["| method | top-1 % | top-5 % |", "|---|---|---|"]
  for method, r in results.items():
    lines.append(f"| {method} | {100 * r['top1']:.1f} | {100 * r['top5']:.1f} |")
  if untrained:
    lines += ["", "The generator was a tiny untrained Stable Diffusion: synthetic images are "
              "noise, so these numbers only show the pipeline runs end to end."]
  text = "\n".join(lines) + "\n"
  files.write_text(os.path.join(workdir, "results.md"), text)
  files.write_json(os.path.join(workdir, "results.json"),
                {m: {k: r[k] for k in ("top1", "top5", "mean_per_class")} for m, r in results.items()})
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import io
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(list(results), [100 * r["top1"] for r in results.values()], color="#4477aa")
    ax.set_ylabel("test top-1 %")
    ax.set_title("digits, 10-shot")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    files.write_bytes(os.path.join(workdir, "accuracy.png"), buf.getvalue())
  except ImportError:
    log.info("matplotlib is not installed: no accuracy.png")
  return text


def _sheet(dataset: str, path: str) -> None:
  """contact_sheet.png: up to ten synthetic images of every digit, one row per digit."""
  from synth_jax import quality
  from synth_jax import report_html
  from synth_jax.data import sources
  images, labels = quality.read_split(sources.open_split(dataset, "train"))
  files.write_bytes(path, report_html.contact_sheet(images, labels, per_class=10, classes=10))


def demo(config) -> dict:
  from synth_jax.data import digits
  workdir = runs.workdir(config)
  methods = methods_of(config)
  validate(config)  # also when called without run_stage
  print(f"[1/4] real data: scikit-learn digits -> {workdir}/data", flush=True)
  real = digits.write_digits(os.path.join(workdir, "data"))
  print("[2/4] generator", flush=True)
  model = _model(config, workdir)
  synthetic = ""
  if any(m != "vanilla" for m in methods):
    print(f"[3/4] generate {config.images_per_class} images per class", flush=True)
    synthetic = _generate(config, workdir, model)
    _sheet(synthetic, os.path.join(workdir, "contact_sheet.png"))
  results = {}
  for i, method in enumerate(methods):
    print(f"[4/4] train {method} ({i + 1}/{len(methods)})", flush=True)
    results[method] = _train(config, workdir, method, real, synthetic)
  text = _report(workdir, results, model.startswith(os.path.join(workdir, "tiny_sd")), model)
  print(text + f"\nresults: {workdir}/results.md, accuracy.png, contact sheets under "
        f"{workdir}/generate", flush=True)
  return json.loads(json.dumps({m: r["top1"] for m, r in results.items()}))
