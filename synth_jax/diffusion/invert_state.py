"""The trainable state of an inversion run: the optimizer choice and its orbax checkpoints.

The state is just the token rows `emb` (tokens, D) float32 and the optimizer state. The
optimizers follow PyTorch's semantics so a diffusers textual-inversion recipe carries over:
`adamw` decays the weights decoupled from the gradient (torch.optim.AdamW), `adam` and `sgd` add
`weight_decay * emb` to the gradient (torch.optim.Adam / SGD with weight_decay).
"""
from __future__ import annotations

import os

from synth_jax import checkpoint_integrity
from synth_jax.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")


def validate(config) -> None:
  name = config.optimizer
  if name not in OPTIMIZERS:
    raise ConfigError(f"optimizer={name!r} is not one of {list(OPTIMIZERS)}; pass e.g. "
                      "--config.optimizer=adamw")
  if float(config.weight_decay) < 0:
    raise ConfigError(f"weight_decay={config.weight_decay} must be >= 0; pass e.g. "
                      "--config.weight_decay=0.01")
  momentum = float(config.momentum)
  if not 0 <= momentum < 1:
    raise ConfigError(f"momentum={momentum} must be in [0, 1) (used by optimizer=sgd); pass e.g. "
                      "--config.momentum=0.9")


def make_optimizer(config):
  """The optax transformation named by `config.optimizer` (see the module docstring)."""
  import optax
  validate(config)
  name = config.optimizer
  lr, wd = float(config.learning_rate), float(config.weight_decay)
  if name == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  if name == "adam":
    return optax.chain(optax.add_decayed_weights(wd), optax.adam(lr))
  momentum = float(config.momentum)
  return optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=momentum or None))




def save(mngr, step: int, emb, opt_state, meta: dict) -> None:
  import orbax.checkpoint as ocp
  state = ocp.args.StandardSave({"emb": emb, "opt": opt_state})
  mngr.save(step, args=ocp.args.Composite(state=state, meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()
  checkpoint_integrity.record(mngr, step)


def restore(mngr, step: int, emb, opt_state, meta: dict):
  """(emb, opt_state) of checkpoint `step`; `emb`/`opt_state` give the expected structure and
  `meta` (tokens, shape, optimizer) what the checkpoint must have been made for."""
  import orbax.checkpoint as ocp
  checkpoint_integrity.verify(mngr, step)  # a truncated/altered file is named here, not in orbax
  saved = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  # keys an older checkpoint lacks (optimizer) are not compared
  wrong = {k: saved[k] for k, v in meta.items()
           if k in saved and list(_seq(saved[k])) != list(_seq(v))}
  if wrong:
    raise ConfigError(f"checkpoint {step} in {mngr.directory} was made for {wrong}, not "
                      f"{ {k: meta[k] for k in wrong} }; use a new --config.workdir")
  state = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore({"emb": emb, "opt": opt_state})))["state"]
  return state["emb"], state["opt"]


def _seq(v):
  return v if isinstance(v, (list, tuple)) else [v]
