"""synth_jax.data: datasets (tfds / local folders / synthetic) and grain input pipelines.

  writer.py     DatasetWriter: tfds-readable ArrayRecord datasets (used by generate and import)
  sources.py    open_split(dir_or_tfds_name, split) -> Split; few_shot_indices; label_map
  registry.py   short names (aircraft, cars, ...) -> tfds or manual builder + standard splits
  manual.py     builders over manually downloaded files (Stanford Cars, FGVC-Aircraft, Pets)
  folder.py     local folder / CSV -> tfds dataset; stage.py is `synth-jax data import`
  synthetic.py  open_synthetic(dir, real_class_names) -> Stream with labels in the real space
  pipeline.py   make_train_dataset / make_paired_dataset / make_eval_dataset (grain)
  augment.py    host transforms (random resized crop, flip, jitter, RandAugment-lite, eval crop)
  mixup.py      on-device mixup / cutmix / normalize_images (jnp)
  digits.py     write_digits(data_dir): scikit-learn digits as a small real tfds dataset
Modules are imported explicitly (`from synth_jax.data import pipeline`); nothing heavy here.
"""
