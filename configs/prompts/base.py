"""Config for `synth-jax prompts`: class names -> prompts.json for `synth-jax generate`.

    # Templates only (default family "li": Li et al.'s "a good photo of the {}."):
    synth-jax prompts --config configs/prompts/base.py:classes=classes.txt --config.workdir=runs/p
    # A registry dataset's names with its suffix ("..., a type of car.") plus DSI prompts:
    synth-jax prompts --config configs/prompts/base.py:dataset=cars,strategies=template+dsi \
        --config.manual_dir=~/cars --config.dsi.token='<cars-style>' --config.workdir=runs/p/cars
    # CD + SD with the LLM answers written by hand ({class: {"contexts": [...]}}):
    synth-jax prompts --config configs/prompts/base.py:classes=c.txt,strategies=template+cd+sd,\
llm=answers.json --config.workdir=runs/p

`arg` keys: classes (text file or "a,b"), folder (root/<class>/*.jpg), dataset (registry name,
tfds name or dataset dir), strategies ("+"-joined subset of template, cd, sd, dsi), llm (a .json
answers file, an HF causal-LM folder, or an http(s) base URL), clip (for disambiguation), seed.
Sourced default: the template family "li" (facts.md 1.3). OUR defaults (neither paper gives them): 8 contexts per class, the style list
templates.DEFAULT_STYLES, equal weight per kind, 4 candidate meanings and 16 real images per
class for disambiguation, greedy decoding.
"""
import ml_collections

from synth_jax.config import parse_arg
from synth_jax.prompts import templates


def llm_config(spec: str) -> ml_collections.ConfigDict:
  """config.llm from one string: answers.json | http(s)://host/v1 | an HF folder | ''."""
  kind = ("" if not spec else "json" if spec.endswith(".json") else
          "http" if spec.startswith(("http://", "https://")) else "hf")
  return ml_collections.ConfigDict(dict(
      kind=kind,
      path=spec if kind in ("json", "hf") else "",
      base_url=spec if kind == "http" else "",
      model="",               # http: the served model's name
      api_key_env="",         # http: env var holding the key ('' = no key)
      timeout=60.0,           # http: seconds per request
      temperature=0.0,        # 0 = greedy; > 0 samples with the per-class seed
      top_p=1.0,
      max_new_tokens=256,
      retries=3,              # extra tries on unusable output, then an error naming the class
  ))


def get_config(arg=None):
  a = parse_arg(arg, classes="", folder="", dataset="", strategies="template", llm="", clip="",
                seed=0)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.compile_cache = ""             # compiled-program cache folder ("" = ~/.cache/synth_jax/xla, "off")
  c.seed = a.seed
  # Where class names (and real images, for disambiguation) come from.
  c.class_names = a.classes       # text file (one per line) or "a,b,c"
  c.image_folder = a.folder       # root/<class>/*.jpg
  c.dataset = a.dataset           # registry name ("cars"), tfds name, or dataset dir
  c.data_dir = "~/tensorflow_datasets"
  c.manual_dir = ""
  c.split = ""                    # '' = the dataset's train split
  c.domain = ""                   # registry name for suffixes/LLM domain ('' = dataset)
  c.classes = []                  # subset of class names ([] = all)
  # What to write.
  c.strategies = tuple(s for s in a.strategies.split("+") if s)
  c.weights = ml_collections.ConfigDict(dict(template=1.0, cd=1.0, sd=1.0, dsi=1.0))
  # Li et al.'s single template "a good photo of the {}." (facts.md 1.3); family "simple" (ours)
  # gives "a photo of a {}." with the dataset suffixes ("..., a type of car.").
  c.template = ml_collections.ConfigDict(dict(family="li", extra=[]))
  c.cd = ml_collections.ConfigDict(dict(n=8, min_items=3, template=templates.CD_TEMPLATE))
  # SD styles: the fixed list, or (from_llm) n styles per class written by the LLM.
  c.sd = ml_collections.ConfigDict(dict(styles=list(templates.DEFAULT_STYLES),
                                        template=templates.SD_TEMPLATE, from_llm=False, n=8,
                                        min_items=3))
  # The one DSI token name: the same as configs/invert/base.py's `token`, so prompts written with
  # the defaults use the token inversion learned (a mismatch stops `generate` before sampling).
  c.dsi = ml_collections.ConfigDict(dict(token="<dataset-style>", template=templates.DSI_TEMPLATE))
  c.disambiguate = ml_collections.ConfigDict(dict(
      enabled=False, n=4, images_per_class=16, template="a photo of a {}.", clip=a.clip,
      model_name="", dtype="float32", batch_size=32))
  c.llm = llm_config(a.llm)
  return c
