"""Training config for `synth-jax train` / `synth-jax sweep`: one trainer, methods as configs.

    synth-jax train --config configs/train/base.py:method=bridged++,dataset=/data/cars/1.0.0,\
synthetic=/runs/gen/cars_syn/1.0.0,model=resnet18 --config.workdir=/runs/train/cars_bpp
    synth-jax train --config configs/train/base.py:method=vanilla,dataset=aircraft \
        --config.manual_dir=~/downloads/aircraft --config.workdir=/runs/train/aircraft  # registry
    synth-jax train --config configs/train/base.py:smoke --config.workdir=/tmp/t   # digits, CPU

A registry name (synth_jax.data.registry) trains and tests on that entry's splits unless
train_split / test_split are set; aircraft and cars are built from your downloads in manual_dir.
Augmentation: every AugmentConfig field (color_jitter, randaugment_ops/_magnitude, crop_pct, ...)
is under `augment`, e.g. --config.augment.color_jitter=0.4.

Methods (facts.md 1.5, 1.6; paper B for auxbn):
  vanilla         real only.
  mix             real + synthetic in one stream; `mix_ratio` = synthetic fraction of each batch.
  synthetic_only  synthetic only.
  bridged         phase 1 synthetic with Mixup, head re-initialised, phase 2 real without Mixup.
  bridged++       the same plan under the paper's name (Bridged++ = "+ FC Reinit & Mixup").
  bridged_plain   phase 1 synthetic, phase 2 real; head kept, no Mixup (the paper's plain row).
  bridged_fc      bridged_plain + FC re-initialisation before phase 2 (paper row "+ FC Reinit").
  auxbn           joint training on paired real/synthetic batches, per-domain BatchNorm, eval on
                  the real statistics (Yu et al.; the split follows AdvProp, facts.md 2.4).
Phase 2 never uses Mixup unless `phase2.mixup_alpha` is set. `reinit_head=None` means "the method's
default"; True/False forces it. Single-phase methods use `phase2`'s optimisation settings.

OUR defaults (the papers give no optimizer, schedule, epochs, batch size or Mixup alpha; facts.md
1.5 "NOT FOUND"): SGD momentum 0.9, lr 0.01, cosine with 5% warmup, weight decay 5e-4 on kernels
only, label smoothing 0.1, Mixup alpha 0.2 (bridged / bridged++ phase 1), 224 px, batch 256.
"""
import ml_collections

from synth_jax.config import parse_arg, refuse_preset_override


def _phase(steps=None, epochs=None, learning_rate=0.01, mixup_alpha=None, min_steps=500):
  s = ml_collections.ConfigDict()
  s.steps = steps              # length: steps if > 0, else examples if > 0, else epochs
  s.epochs = epochs
  s.examples = None
  # Step floor for lengths from epochs/examples (an explicit `steps` has none). OURS, because the
  # paper's schedule is NOT FOUND (facts.md 1.5): 500 = BiT-HyperRule's steps for transfer sets
  # under 20k images (Kolesnikov et al. 2020), so 1- to 16-shot phases train to convergence
  # instead of 4-48 steps (issue 17; measured on digits in synth_jax/train/schedule.py's test).
  s.min_steps = min_steps
  s.learning_rate = learning_rate  # peak
  s.warmup_fraction = 0.05
  s.mixup_alpha = ml_collections.FieldReference(mixup_alpha, field_type=float)  # None = method's
  s.cutmix_alpha = 0.0
  return s


def get_config(arg=None):
  """`arg`: 'method=...,model=...,dataset=...,synthetic=...,shots=...,seed=...,smoke'."""
  a = parse_arg(arg, method="vanilla", model="resnet18", dataset="", synthetic="", shots=-1,
                seed=0, smoke=False, init="", image_size=224, batch_size=256, mix_ratio=0.5,
                volume=-1)
  c = ml_collections.ConfigDict()
  c.workdir = ""
  c.compile_cache = ""             # compiled-program cache folder ("" = ~/.cache/synth_jax/xla, "off")
  c.method = a.method
  c.seed = a.seed
  # Data.
  c.dataset = a.dataset          # real dataset dir, or a registry name (digits, cars, ...)
  c.data_dir = ""                # registry data_dir ('' = ~/tensorflow_datasets)
  c.manual_dir = ""              # your downloaded files (aircraft, cars; pets, imagenet via tfds)
  c.train_split = ""             # '' = the registry's (e.g. aircraft: trainval), a dir's "train"
  c.test_split = ""              # '' = the registry's (e.g. food101: validation), a dir's "test"
  c.extra_eval = ()              # more eval sets (registry names), e.g. imagenet_sketch,imagenet_r
  c.synthetic = a.synthetic      # synthetic dataset dir written by `synth-jax generate`
  c.volume = a.volume            # synthetic images per class to use (-1 = all)
  c.shots = a.shots              # k real images per class (-1 = all)
  c.mix_ratio = a.mix_ratio      # mix: synthetic fraction of each batch
  c.auxbn_synthetic_fraction = 0.5
  # AuxBN affine per domain (AdvProp's MixBatchNorm keeps separate scale/bias, facts.md 2.4; paper
  # B: NOT FOUND). Ours: shared (False). A ViT under auxbn needs True (per-domain LayerNorm affine).
  c.auxbn_separate_affine = False
  # OURS (issue 17): a real/synthetic phase's batch never exceeds its examples (a 1-shot set of
  # 37 images trains at batch 32, not 256 copies of 37 images); mix/auxbn epochs count real
  # images, so every method sees the same real images for the same phaseN.epochs.
  c.batch_cap_by_data = True
  c.epochs_in_real_images = True
  c.batch_size = a.batch_size
  c.eval_batch_size = 256
  c.workers = 0                  # grain worker processes
  # Every field of synth_jax.data.pipeline.AugmentConfig (eval uses resolution and crop_pct).
  c.augment = ml_collections.ConfigDict(dict(
      resolution=a.image_size, flip=True, min_scale=0.08, color_jitter=0.0, randaugment_ops=0,
      randaugment_magnitude=9.0, crop_pct=0.875, uint8=True,
      # Input mean/std ([0, 1] units). None = what the weights were trained with, recorded by the
      # importer (synth_jax.models.input_norm: torchvision/timm ResNets ImageNet's, timm augreg,
      # HF google/vit and big_vision ViTs 0.5/0.5); set both to force another.
      mean=None, std=None))
  # Model.
  c.model = a.model              # resnet18..152, vit_s16/b16/b32/l16, or resnet:basic:1,1,1,1
  # Pretrained weights file/folder. '' refuses to train (both papers fine-tune ImageNet-pretrained
  # models; a silent random init gives a number that means nothing); "scratch" = random init.
  c.init = a.init
  c.init_format = "torchvision"  # torchvision | timm | hf | big_vision
  c.dtype = "float32"            # float32 | bfloat16 compute (params, BN stats and loss stay float32)
  c.fsdp = False                 # shard large params over the mesh's fsdp axis
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Optimisation.
  c.optimizer = "sgd"            # sgd | adamw
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.label_smoothing = 0.1
  c.grad_accum = 1               # optax.MultiSteps micro-batches per update
  c.reinit_head = ml_collections.FieldReference(None, field_type=bool)
  # Re-estimate BatchNorm statistics on real training images before the final evaluation
  # (torch's swa_utils.update_bn rule). None = the method's default: on after bridged methods,
  # whose short real phase leaves the statistics partly synthetic; off otherwise. OURS.
  c.bn_recalibrate = ml_collections.FieldReference(None, field_type=bool)
  c.bn_recalibrate_images = 10000  # at most this many real images (one pass when fewer)
  c.phase1 = _phase(epochs=10)
  c.phase2 = _phase(epochs=30)
  # Bookkeeping.
  c.log_every = 50
  c.eval_every = 0               # 0 = at the end of each phase only
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.tensorboard = True
  if a.smoke:  # digits at 32 px on CPU: a tiny ResNet
    refuse_preset_override(arg, "smoke", ("model", "image_size", "batch_size"))
    c.dataset = c.dataset or "digits"
    c.model = "resnet:basic:1,1,1,1"
    c.init = c.init or "scratch"  # ours: a tiny CPU demo has no pretrained weights to start from
    c.augment.resolution = 32
    c.augment.min_scale = 0.6
    c.augment.flip = False
    c.batch_size = 64
    c.eval_batch_size = 128
    c.phase1 = _phase(steps=100, learning_rate=0.1)
    c.phase2 = _phase(steps=300, learning_rate=0.1)
    c.log_every = 25
    c.checkpoint_every = 100
    c.tensorboard = False
  return c
