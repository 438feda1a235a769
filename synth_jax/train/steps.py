"""The jitted train and eval steps (one program each; the batch lives on the mesh's batch axes).

  train_step = make_train_step(model, tx, num_classes, mixup_alpha=0.2, domain=None, ...)
  state, metrics = train_step(state, batch, rng)     # state is donated
  eval_step = make_eval_step(model, num_classes)
  out = eval_step(state.params, state.batch_stats, batch)  # per-example top-1/top-5 hits

Per-step randomness (Mixup, dropout) is `fold_in(rng, step)` from a per-stage key, so a resumed run
draws exactly what an uninterrupted one would.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from synth_jax.data import mixup as mixup_lib
from synth_jax.train.state import TrainState


def batch_images(batch, dtype, norm=None):
  """`norm`: (mean, std) of the weights (models.input_norm) or None for ImageNet's."""
  images = batch["image"]
  if images.dtype == jnp.uint8:  # pipeline ran with augment uint8=True: normalize on device
    return mixup_lib.normalize_images(images, dtype, *(norm or (None, None)))
  return images.astype(dtype)


def make_train_step(model, tx, num_classes: int, *, mixup_alpha: float = 0.0,
                    cutmix_alpha: float = 0.0, label_smoothing: float = 0.0,
                    domain: Any = None, dtype=jnp.float32, norm=None,
                    state_shardings: Any = None, metrics_sharding: Any = None,
                    host_order: Any = None):
  """A jitted (state, batch, rng) -> (state, metrics) with the state donated.

  With `state_shardings` (a TrainState of NamedShardings) the new state is pinned to the old
  one's placement, so a step never gathers a sharded parameter onto one device.

  Args:
    norm: (mean, std) the weights expect for uint8 batches (None: ImageNet's).
    domain: the model's BN routing: None, an int, static (n_real, n_syn) split sizes, or
      "batch" = each example's `batch["domain"]` id (right for any host count and row order).
    mixup_alpha/cutmix_alpha: > 0 turns the regularizer on (soft targets).
    host_order: `mixup.host_order(...)` on several processes: Mixup/CutMix pair the rows as a
      one-process run over the same global batch would.
  """
  def step(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    images = batch_images(batch, dtype, norm)
    labels = batch["label"]
    route = batch["domain"] if isinstance(domain, str) and domain == "batch" else domain
    if mixup_alpha > 0 or cutmix_alpha > 0:
      images, targets = mixup_lib.mix_batch(rng, images, labels, num_classes, mixup_alpha,
                                            cutmix_alpha, order=host_order)
    else:
      targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
      targets = optax.smooth_labels(targets, label_smoothing)

    def loss_fn(params):
      (logits, _), updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                         images, train=True, domain=route,
                                         mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
      return loss, (logits, updates.get("batch_stats", state.batch_stats))

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, batch_stats=stats,
                        opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
               "grad_norm": optax.global_norm(grads)}
    return new, metrics

  if state_shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  return jax.jit(step, donate_argnums=(0,), out_shardings=(state_shardings, metrics_sharding))


def make_eval_step(model, num_classes: int, dtype=jnp.float32, domain: Any = None, norm=None,
                   class_mask=None):
  """A jitted (params, batch_stats, batch) -> per-example {top1, top5, label, mask}.

  Evaluation uses domain 0 ("real") statistics unless told otherwise (AuxBN evaluates on real).
  `class_mask` (bool[num_classes]) restricts predictions to a subset of the classes, as
  ImageNet-R's 200-class protocol does.
  """
  k = min(5, num_classes)

  def step(params, batch_stats, batch):
    logits, _ = model.apply({"params": params, "batch_stats": batch_stats},
                            batch_images(batch, dtype, norm), train=False, domain=domain)
    labels = batch["label"]
    if class_mask is not None:
      logits = jnp.where(jnp.asarray(class_mask), logits, -jnp.inf)
    top = jax.lax.top_k(logits.astype(jnp.float32), k)[1]
    return {"top1": top[:, 0] == labels, "top5": jnp.any(top == labels[:, None], -1),
            "label": labels, "mask": batch["mask"],
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, labels)}

  return jax.jit(step)
