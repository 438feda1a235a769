"""Base training config: every method, any model and dataset, few-shot and seeds.

  synth-jax train --config configs/train/base.py:method=bridged++,dataset=cars,model=resnet18 \
      --config.data.synthetic=runs/cars_syn/dataset --config.workdir=runs/cars_bridged
  synth-jax train --config configs/train/base.py:smoke --config.workdir=/tmp/smoke   # digits, tiny

Arg keys: method (vanilla | mix | synthetic_only | bridged | bridged_plain | bridged_fc | bridged++ |
auxbn), model, dataset (registry name or directory), synthetic (dataset dir), shots (-1 = all),
volume (synthetic per class, -1 = all), seed, smoke (digits-sized everything, seconds on a CPU).

Which defaults are sourced: Li et al. fine-tune the whole ImageNet-pretrained network, stage 1 on
synthetic then stage 2 on real, with FC reinit and stage-1 Mixup for Bridged++ (facts.md 1.5). The
paper gives NO optimizer, learning rates, schedules, epochs, batch size, weight decay, resolution
or Mixup alpha: every number below is OURS (a standard fine-tuning recipe: SGD momentum 0.9,
cosine, 224 px, Mixup alpha 0.2 in stage 1). AuxBN's equal real/synthetic halves and real-BN
evaluation follow AdvProp's MixBatchNorm (facts.md 2.4), not a sourced detail of Yu et al.
"""
from synth_jax.config import ConfigDict, parse_arg


def stage(**kw):
  s = ConfigDict(dict(
      optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, b1=0.9, b2=0.999,  # ours
      weight_decay=1e-4, schedule="cosine", warmup_steps=None, warmup_percent=5.0, end_lr_factor=0.0,
      label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, grad_clip=0.0, grad_accum=1,
      batch_size=64, train_steps=None, train_epochs=None, train_examples=None))
  s.update(kw)
  return s


def get_config(arg=None):
  a = parse_arg(arg, method="bridged++", model="resnet18", dataset="digits", synthetic="", shots=-1,
                volume=-1, seed=0, smoke=False, init="")
  c = ConfigDict()
  c.workdir = ""
  c.method = a.method
  c.seed = a.seed
  c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.model = ConfigDict(dict(name=a.model, init=a.init, source="torchvision", dtype="float32",
                            zero_init_residual=False))
  c.data = ConfigDict(dict(
      real=a.dataset, data_dir="~/tensorflow_datasets", manual_dir="", train_split="", eval_split="",
      synthetic=a.synthetic, shots=a.shots, volume=a.volume, resolution=224,
      augment=ConfigDict(dict(flip=True, min_scale=0.08, color_jitter=0.0, randaugment_ops=0, uint8=True,
                              crop_pct=0.875)),
      workers=0, threads=8, prefetch=64))
  # stage1: synthetic stage of the bridged methods (Mixup on: Bridged++). stage2: the final stage on
  # the target data (the only stage of vanilla / mix / synthetic_only / auxbn). Epochs are ours.
  c.stage1 = stage(lr=0.01, mixup_alpha=0.2, train_epochs=10)
  c.stage2 = stage(lr=0.01, mixup_alpha=0.0, train_epochs=30)
  c.mix_ratio = 0.5                                  # synthetic fraction of the mixed stream (ours)
  c.auxbn = ConfigDict(dict(synthetic_fraction=0.5))  # AdvProp's equal halves (facts.md 2.4)
  c.eval_batch_size = 256
  c.log_every_steps = 50
  c.eval_every_steps = 0                             # 0: evaluate at the end only
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 2
  c.async_checkpoints = True
  if a.smoke:  # digits at 32 px, a one-block-per-stage ResNet, a few hundred steps on a CPU
    c.model.name = "resnet:basic:1,1,1,1" if a.model == "resnet18" else a.model
    c.data.resolution = 32
    c.data.augment.update(flip=False, min_scale=0.6)
    c.stage1.update(batch_size=64, train_epochs=None, train_steps=60, lr=0.05, warmup_percent=10.0)
    c.stage2.update(batch_size=64, train_epochs=None, train_steps=200, lr=0.05, warmup_percent=10.0)
    c.eval_batch_size = 512
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
  return c
