"""`synth-jax invert`: Dataset Style Inversion (one token for a dataset's style), resumable.

    synth-jax invert --config configs/invert/base.py:model=/models/sd15,dataset=dtd \
        --config.workdir=runs/invert/dtd

Adds a placeholder token (or one per class with `per_class=True`, DA-Fusion style:
`<stem-i-name>`, in class prompts "a photo of a <stem-i-name>"), starts its embedding from
`init_word`, and trains only that row with the denoising loss (epsilon or v, per the model's
scheduler; optimizer adamw / adam / sgd) on VAE latents of the real images; every other weight and
embedding row is a frozen constant of the jitted step, so it cannot change. DSI prompts carry no
class name: the token stands for the dataset. The batch of step s, its flips, templates, noise
and timesteps all derive from (seed, s), so a run resumed from an orbax checkpoint ends
bit-identical to an uninterrupted one; every checkpoint file's size and sha256 are recorded and
checked before a restore. Writes `learned_embeds.safetensors` (diffusers' textual-inversion
layout; for SDXL its `clip_l`/`clip_g` layout, the token trained in both encoders: `invert_xl.py`)
and a preview contact sheet.
"""
from __future__ import annotations

import logging
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from synth_jax import checkpoint_integrity, faults, files, hosts, runs, sharding, streams
from synth_jax import config as config_lib
from synth_jax.diffusion import invert_data, invert_state, invert_xl
from synth_jax.diffusion import loading, schedulers, textual_inversion
from synth_jax.errors import ConfigError, TrainingError, WeightsError
from synth_jax.models import clip_text, weights

log = logging.getLogger(__name__)


def validate(config) -> None:
  """Every field before any model loads or anything is written (checks.VALIDATORS["invert"])."""
  from synth_jax import checks
  from synth_jax.checks import BIG, Bool, Float, Int, OneOf, Path, Text
  checks.check(config, {
      "model_path": Text(), "dataset": Text(), "data_dir": Text(), "split": Text(True),
      "shots": Int(-1, BIG, 10), "max_images": Int(0, BIG, 0), "resolution": Int(8, 4096, 512),
      "init_from_class_name": Bool(),  # center_crop, flip, per_class: below
      "token": Text(True, "'<dataset-style>'", 200), "init_word": Text(True, "photo", 200),
      "steps": Int(0, BIG, 3000), "examples": Int(0, BIG, 0), "epochs": Float(0, 1e6, 0),
      "batch_size": Int(1, 4096, 8),
      "learning_rate": Float(0, 100, 5e-3, lo_open=True), "weight_decay": Float(0, 10, 1e-2),
      "seed": Int(0, 2**32 - 1, 0),  # optimizer, momentum: invert_state.validate
      "checkpoint_every": Int(1, BIG, 500), "keep_checkpoints": Int(1, 1000, 2),
      "encode_batch_size": Int(1, 4096, 16), "preview_images": Int(0, 1024, 8),
      "preview_steps": Int(1, 1000, 25), "preview_prompt": Text(example="'a photo in the style of {}'"),
      "fsdp": Bool(), "dtype": OneOf(checks.DTYPES, "bfloat16")})
  if config.get("shots") == 0:
    raise checks.bad("shots", 0, "selects nothing; use -1 for all or k >= 1", 10)
  if not isinstance(config.get("templates"), (list, tuple)) or not all(
      isinstance(t, str) and t.count("{}") == 1 for t in config.templates):
    raise checks.bad("templates", config.get("templates"),
                     "must be a list of prompts with one '{}' each", "\"['a photo in the style of {}']\"")
  if "{}" not in config.preview_prompt:
    raise checks.bad("preview_prompt", config.preview_prompt, "has no '{}' for the token",
                     "'a photo in the style of {}'")
  if os.path.isdir(os.path.expanduser(config.dataset)):
    checks.not_inside_input(runs.workdir(config), "dataset", config.dataset)
  config_lib.check_duration(config, example="steps=3000")
  if float(config.learning_rate) <= 0:
    raise ConfigError(f"learning_rate={config.learning_rate} must be > 0")
  if int(config.resolution) % 8:
    raise ConfigError(f"resolution={config.resolution} is not divisible by 8; use e.g. 512")
  config_lib.dtype_from(config)
  if not config.token.startswith("<") or not config.token.endswith(">"):
    raise ConfigError(f"token={config.token!r} should look like '<dataset-style>' so it cannot "
                      "collide with a real word")
  for key in ("center_crop", "flip", "per_class"):
    if not isinstance(config.get(key), bool):
      raise ConfigError(f"{key}={config.get(key)!r} must be True or False; pass e.g. "
                        f"--config.{key}=True")
  invert_state.validate(config)


def tokens_for(config, class_names) -> list[str]:
  """[token] for DSI; per_class: `<stem-i-classname>`, so every class prompt names its class."""
  if config.per_class:
    stem = config.token[1:-1]
    # lower-case ASCII only: CLIP's tokenizer lower-cases prompts before matching added tokens
    slugs = [re.sub(r"[^a-z0-9]+", "_", str(n).lower()).strip("_") for n in class_names]
    return [f"<{stem}-{i}-{slug}>" if slug else f"<{stem}-{i}>" for i, slug in enumerate(slugs)]
  return [config.token]


def _init_vectors(pipe, words: list[str], encoder: str = "text_encoder",
                  tokenizer=None) -> np.ndarray:
  """Each token starts at the embedding of its init word (mean over its BPE pieces)."""
  table = np.asarray(weights.flatten(pipe.params[encoder])[clip_text.TOKEN_EMBEDDING], np.float32)
  out = []
  for w in words:
    ids = (tokenizer or pipe.tokenizer)(w, add_special_tokens=False).input_ids
    if not ids:
      raise ConfigError(f"init_word={w!r} tokenizes to nothing; pass a plain word such as 'photo'")
    out.append(table[ids].mean(0))
  return np.stack(out)


class Inverter:
  """The frozen pipeline, the batch maker and the jitted train step of one inversion run."""

  def __init__(self, config, pipe: loading.StableDiffusion, data: invert_data.InversionData, mesh):
    self.config, self.pipe, self.data, self.mesh = config, pipe, data, mesh
    sharding.check_batch(mesh, int(config.batch_size))
    self.tokens = tokens_for(config, data.class_names)
    init_words = ([n.replace("_", " ") for n in data.class_names] if config.per_class and
                  config.init_from_class_name else [config.init_word] * len(self.tokens))
    # SDXL: a row in each encoder's table, both trained; emb/init/token_ids are then dicts
    # {encoder: ...} (SD 1.x/2.x: arrays, as before)
    encoders = invert_xl.ENCODERS if pipe.is_xl else (("text_encoder", "tokenizer", None),)
    init, token_ids = {}, {}
    for enc, tok_name, _ in encoders:
      tokenizer = getattr(pipe, tok_name)
      init[enc] = _init_vectors(pipe, init_words, enc, tokenizer)
      te = textual_inversion.add_tokens(tokenizer, pipe.params[enc], self.tokens, list(init[enc]))
      pipe.params[enc] = te
      rows = te["embeddings"]["token_embedding"]["embedding"].shape[0]
      setattr(pipe, enc, getattr(pipe, enc).clone(vocab_size=rows))
      token_ids[enc] = np.asarray(tokenizer.convert_tokens_to_ids(self.tokens), np.int32)
    # host copy: device arrays of emb are donated
    init = {k: np.asarray(v, np.float32) for k, v in init.items()}
    self.token_ids = token_ids if pipe.is_xl else token_ids["text_encoder"]
    self.init = init if pipe.is_xl else init["text_encoder"]
    # (tokens, templates, 77); SDXL: both tokenizers' ids side by side
    self.templates = (invert_xl.prompt_ids if pipe.is_xl else invert_data.prompt_ids)(
        pipe, config, self.tokens)
    rep = sharding.replicated(mesh)
    frozen = {k: pipe.params[k] for k in ("unet",) + tuple(e for e, _, _ in encoders)}
    # fsdp=True splits the frozen weights over the mesh's fsdp axis (XLA gathers them per layer)
    where = sharding.logical_shardings(frozen, mesh, fsdp=bool(config.fsdp))
    self.frozen = jax.device_put(frozen, where)
    self.sched_config = dict(pipe.scheduler_config)
    self.tx = invert_state.make_optimizer(config)
    # one output sharding for every step, so step 2 reuses step 1's executable
    self._step = jax.jit(self._train_step, donate_argnums=(0, 1), out_shardings=rep)
    self.compiles = 0

  def init_state(self):
    """(emb, opt_state) at the start values, placed as the step's outputs are: otherwise step 1
    sees other input shardings than step 0 and compiles the step a second time."""
    rep = sharding.replicated(self.mesh)
    emb = jax.device_put(self.init, rep)
    return emb, jax.device_put(self.tx.init(emb), rep)

  def loss(self, emb, frozen, ids, mean, std, key):
    """Denoising MSE for one batch; the only free variable is `emb` (tokens, D)."""
    k_lat, k_noise, k_t = jax.random.split(key, 3)
    latents = (mean + std * jax.random.normal(k_lat, mean.shape)) * self.pipe.vae_scaling_factor
    noise = jax.random.normal(k_noise, latents.shape)
    t = jax.random.randint(k_t, (latents.shape[0],), 0,
                           int(self.sched_config.get("num_train_timesteps", 1000)))
    return self.denoising_loss(emb, frozen, ids, latents, noise, t)

  def denoising_loss(self, emb, frozen, ids, latents, noise, t):
    """The loss for given (scaled) latents, noise and timesteps (what the parity test checks)."""
    pipe = self.pipe
    if pipe.is_xl:
      context, added = invert_xl.conditioning(pipe, frozen, emb, self.token_ids, ids,
                                              int(self.config.resolution))
    else:
      te_params = frozen["text_encoder"]
      table = te_params["embeddings"]["token_embedding"]["embedding"]
      table = table.at[self.token_ids].set(emb.astype(table.dtype))
      text = pipe.text_encoder.apply({"params": te_params}, ids, inputs_embeds=table[ids])
      context, added = text["last_hidden_state"], {}
    noisy = schedulers.add_noise(self.sched_config, latents, noise, t)
    target = schedulers.training_target(self.sched_config, latents, noise, t)
    pred = pipe.unet.apply({"params": frozen["unet"]}, noisy.astype(pipe.dtype), t, context,
                           **added)
    return jnp.mean((pred.astype(jnp.float32) - target) ** 2)

  def _train_step(self, emb, opt_state, frozen, ids, mean, std, key):
    self.compiles += 1  # runs only while tracing: counts compilations
    loss, grad = jax.value_and_grad(self.loss)(emb, frozen, ids, mean, std, key)
    updates, opt_state = self.tx.update(grad, opt_state, emb)
    import optax
    return optax.apply_updates(emb, updates), opt_state, loss

  def batch(self, step: int):
    """(ids, latent mean, latent std, key) of step `step`, from (seed, step) only."""
    ids, mean, std = self.data.batch(int(self.config.seed), step, int(self.config.batch_size),
                                     self.templates)
    # every process builds the whole batch from (seed, step); each feeds its devices' rows
    ids, mean, std = sharding.shard_global_batch((ids, mean, std), self.mesh)
    key = streams.key(int(self.config.seed), "invert_noise", step)
    return ids, mean, std, key

  def train_step(self, emb, opt_state, batch):
    """One optimizer step on `batch` = (ids, mean, std, key): -> (emb, opt_state, loss).

    `emb` and `opt_state` are donated (their buffers are reused for the outputs). They are pinned
    to the step's (replicated) output placement: left to propagation, a host array would take the
    sharding of the token table it is written into (split over fsdp along `embed`), and the
    donated buffer would no longer match its output."""
    emb, opt_state = jax.device_put((emb, opt_state), sharding.replicated(self.mesh))
    return self._step(emb, opt_state, self.frozen, *batch)

  def step(self, emb, opt_state, step: int):
    """The training step `step` of the run: `train_step` on `batch(step)`."""
    return self.train_step(emb, opt_state, self.batch(step))


def invert(config) -> str:
  """Runs (or resumes) the inversion; returns the path of learned_embeds.safetensors."""
  validate(config)
  workdir = runs.workdir(config)
  out = os.path.join(workdir, "learned_embeds.safetensors")
  if os.path.exists(out):
    log.info("%s exists: inversion already finished", out)
    return out
  if not os.path.isdir(os.path.expanduser(config.model_path or "")):
    raise WeightsError(f"pipeline folder {config.model_path!r} does not exist; pass a diffusers "
                       "Stable Diffusion folder: --config.model_path=/path/to/sd")
  mesh = sharding.make_mesh(config.mesh)
  pipe = loading.load_pipeline(config.model_path, dtype=config_lib.dtype_from(config))
  data = invert_data.load(config, pipe, mesh, workdir)
  inv = Inverter(config, pipe, data, mesh)
  emb, opt_state = inv.init_state()
  mngr = checkpoint_integrity.checkpoint_manager(workdir, int(config.keep_checkpoints))
  start = 0
  shape = ({k: list(v.shape) for k, v in emb.items()} if isinstance(emb, dict)
           else list(emb.shape))
  meta = {"tokens": inv.tokens, "shape": shape, "optimizer": config.optimizer}
  if mngr.latest_step() is not None:
    start = int(mngr.latest_step())
    emb, opt_state = invert_state.restore(mngr, start, emb, opt_state, meta)
    log.info("resuming inversion at step %d", start)
  # config.steps_from's rule: steps, else examples, else epochs of the training images
  total = config_lib.steps_from(config, examples_per_epoch=len(data.labels),
                                batch_size=int(config.batch_size))
  bar = runs.progress(total=total, initial=start, desc="invert", unit="step")
  losses = []
  for step in range(start, total):
    if hosts.any_host(runs.should_stop()):  # every host saves the same step
      invert_state.save(mngr, step, emb, opt_state, meta)
      raise runs.Preempted(f"invert: SIGTERM received; saved step {step}, rerun the same command "
                           "to continue")
    new_emb, new_opt, loss = inv.step(emb, opt_state, step)
    loss = float(loss)
    if not np.isfinite(loss):
      last = mngr.latest_step()
      raise TrainingError(f"loss is {loss} at inversion step {step}; the last good checkpoint "
                          f"(step {last}) is kept: lower --config.learning_rate (now "
                          f"{config.learning_rate}) and rerun")
    emb, opt_state = new_emb, new_opt
    losses.append(loss)
    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.update(1)
    done = step + 1
    if done % int(config.checkpoint_every) == 0 or done == total:
      invert_state.save(mngr, done, emb, opt_state, meta)
    faults.point("invert_step")
  bar.close()
  vectors = jax.tree_util.tree_map(lambda v: np.asarray(v, np.float32), jax.device_get(emb))
  files.write_json(os.path.join(workdir, "invert_log.json"),
                {"tokens": inv.tokens, "steps": total, "last_losses": losses[-50:],
                 "init_words": config.init_word})
  if int(config.preview_images) > 0:
    _preview(config, workdir, inv.tokens, vectors)
  xl = inv.pipe.is_xl
  if config.per_class:  # diffusers' loader takes one token per file: one file per class
    for i, (name, tok) in enumerate(zip(inv.data.class_names, inv.tokens)):
      path = os.path.join(workdir, "per_class", f"{i:04d}.safetensors")
      if xl:
        invert_xl.save(path, tok, {k: v[i] for k, v in vectors.items()})
      else:
        textual_inversion.save_learned_embeds(path, {tok: vectors[i]})
    files.write_json(os.path.join(workdir, "per_class", "tokens.json"),
                  {name: tok for name, tok in zip(inv.data.class_names, inv.tokens)})
  # learned_embeds.safetensors is written last (the completion marker). For per_class runs it
  # holds every token as a record; generation loads the per_class/ folder instead
  # (--config.style_token_path=<workdir>/per_class), one file per token as diffusers expects.
  # SDXL: diffusers' clip_l/clip_g file (one token: with per_class, the record holds the rows
  # of every token, named in order in its metadata)
  if xl:
    invert_xl.save(out, inv.tokens if config.per_class else inv.tokens[0],
                   vectors if config.per_class else {k: v[0] for k, v in vectors.items()})
  else:
    textual_inversion.save_learned_embeds(out, dict(zip(inv.tokens, vectors)))
  log.info("wrote %s (%d token(s))", out, len(inv.tokens))
  return out


def _preview(config, workdir: str, tokens: list[str], vectors) -> None:
  """A contact sheet of images generated with the learned token (fresh pipeline, our sampler)."""
  from PIL import Image
  from synth_jax.diffusion import generate_finish, sampler as sampler_lib
  pipe = loading.load_pipeline(config.model_path, dtype=config_lib.dtype_from(config))
  for i, tok in enumerate(tokens):  # the loader takes one token at a time, like diffusers'
    if pipe.is_xl:
      invert_xl.load(pipe, tok, {k: v[i] for k, v in vectors.items()})
    else:
      textual_inversion.load_textual_inversion(pipe, {tok: vectors[i]})
  n = int(config.preview_images)
  mesh = sampler_lib.local_mesh(None)
  batch = -(-n // sharding.data_parallel_size(mesh)) * sharding.data_parallel_size(mesh)
  s = sampler_lib.Sampler(pipe, mesh, batch_size=batch, num_steps=int(config.preview_steps),
                          height=int(config.resolution), width=int(config.resolution),
                          scheduler="dpm++2m")
  prompts = [str(config.preview_prompt).format(tokens[i % len(tokens)]) for i in range(batch)]
  images = s(prompts, "", np.arange(batch, dtype=np.uint32), 7.5)[:n]
  sheet = generate_finish.contact_sheet([Image.fromarray(im) for im in images])
  files.write_bytes(os.path.join(workdir, "preview_contact_sheet.png"), sheet)

