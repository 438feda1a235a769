"""Config for `synth-jax filter`: CLIP-score a synthetic dataset and drop low/misclassified images.

    synth-jax filter --config configs/filter/base.py:synthetic=/runs/gen/cars_syn/1.0.0,\
clip=/models/clip-vit-base-patch16,drop_fraction=0.1 --config.workdir=/runs/filter/cars

OUR defaults (no paper gives them): drop the lowest-scoring 10% per class and every image CLIP
zero-shot assigns to another class (He et al., ICLR'23 filter), one template "a photo of a {}.".
"""
import ml_collections

from synth_jax.config import parse_arg


def get_config(arg=None):
  """`arg`: 'synthetic=DIR,clip=PATH,drop_fraction=F,drop_misclassified=B'."""
  a = parse_arg(arg, synthetic="", clip="", drop_fraction=0.1, drop_misclassified=True)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.compile_cache = ""             # compiled-program cache folder ("" = ~/.cache/synth_jax/xla, "off")
  c.synthetic = a.synthetic          # dataset dir written by `synth-jax generate`
  c.split = "train"
  c.clip = a.clip                    # HF CLIPModel folder, OpenCLIP hub folder or checkpoint file
  c.clip_model_name = ""             # OpenCLIP architecture for a bare checkpoint, e.g. "ViT-B-16"
  c.clip_model_config = ""           # or its JSON config file
  c.clip_dtype = "float32"
  c.prompts_json = ""                # optional prompts.json: use its disambiguated class names
  c.templates = ["a photo of a {}."]
  c.drop_fraction = a.drop_fraction  # lowest-scoring fraction dropped per class
  c.drop_misclassified = a.drop_misclassified
  c.min_keep_per_class = 1           # never empty a class
  c.batch_size = 64                  # CLIP batch
  c.chunk_size = 2048                # images scored per resumable chunk
  c.shard_size = 1000                # examples per output shard
  c.output_name = ""                 # output dataset name ('' = <input name>_filtered)
  return c
