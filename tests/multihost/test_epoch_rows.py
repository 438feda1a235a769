"""Every host's share of an epoch: the hosts' rows of each global batch are exactly the rows one
process would have (any host count), so every real and synthetic example of an epoch is seen
exactly once across hosts; and AuxBN routes rows by their domain id, whatever the host layout."""
import collections

import jax
import numpy as np
import pytest

from synth_jax import models
from synth_jax.data import pipeline, sources, synthetic
from synth_jax.train import state as state_lib, steps as steps_lib
from tests.train import helpers

AUG = {"resolution": 16, "min_scale": 0.6}


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
  real, syn = helpers.write_data(tmp_path_factory.mktemp("data"))
  r = sources.open_split(real, "train")
  return r, synthetic.open_synthetic(syn, r.class_names)


def _global_batches(make, processes, count):
  """Batch k of every host, concatenated in process order (= the global batch's rows)."""
  its = [iter(make(p, processes)) for p in range(processes)]
  return [{k: np.concatenate([b[k] for b in hb]) for k in hb[0]}
          for hb in ([next(it) for it in its] for _ in range(count))]


def _rows(batch, mask=None):
  keep = np.ones(len(batch["label"]), bool) if mask is None else mask
  return collections.Counter((int(l), x.tobytes()) for l, x, m in
                             zip(batch["label"], batch["image"], keep) if m)


@pytest.mark.parametrize("processes", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_an_epoch_is_seen_once_across_hosts(splits, processes):
  real, syn = splits
  n_real, n_syn = len(real), len(syn.split)
  # Real stream (vanilla / bridged phase 2): one epoch of global batches of 16.
  make = lambda p, c: pipeline.make_train_dataset(pipeline.Stream(real), 16, 0, augment=AUG,  # noqa: E731
                                                  process_index=p, process_count=c)
  steps = n_real // 16
  one, many = _global_batches(make, 1, steps), _global_batches(make, processes, steps)
  for a, b in zip(one, many):
    assert _rows(a) == _rows(b)
  labels = np.concatenate([b["label"] for b in many])
  want = np.bincount(real.labels(), minlength=10)
  seen = sum((_rows(b) for b in many), collections.Counter())
  assert max(seen.values()) == 1  # no example twice within the epoch
  assert len(labels) == steps * 16 and (np.bincount(labels, minlength=10) <= want).all()
  # Paired (auxbn): 8 real + 8 synthetic per global batch; every domain's rows match one process.
  make = lambda p, c: pipeline.make_paired_dataset(real, syn, 8, 8, 0, augment=AUG,  # noqa: E731
                                                   process_index=p, process_count=c)
  steps = min(n_real, n_syn) // 8
  one, many = _global_batches(make, 1, steps), _global_batches(make, processes, steps)
  for a, b in zip(one, many):
    for d in (0, 1):
      assert _rows(a, a["domain"] == d) == _rows(b, b["domain"] == d)
    assert (b["domain"] == 0).sum() == 8
  for d in (0, 1):
    seen = sum((_rows(b, b["domain"] == d) for b in many), collections.Counter())
    assert max(seen.values()) == 1 and sum(seen.values()) == steps * 8


def test_auxbn_routes_rows_by_domain_id_in_any_host_layout():
  """The global batch of 2 hosts is [host 0: real, synthetic | host 1: real, synthetic]; routing
  by position (the old (n_real, n_syn) split of the global batch) mixes the domains' statistics."""
  model, params, stats = state_lib.build_model(
      _cfg(), 10, ("real", "synthetic"))
  tx = state_lib.make_optimizer(_cfg(), _cfg().phase2, 4)
  rng = np.random.default_rng(0)
  real = rng.normal(0.0, 1.0, (8, 16, 16, 3)).astype(np.float32)
  syn = rng.normal(2.0, 3.0, (8, 16, 16, 3)).astype(np.float32)  # another domain: other stats
  labels = np.arange(16) % 10

  compiled = {}

  def run(images, domain_ids, route):
    copy = lambda t: jax.tree.map(np.array, t)  # noqa: E731  (the step donates its state)
    state = state_lib.TrainState.create(copy(params), copy(stats), tx)
    step = compiled.setdefault(str(route), steps_lib.make_train_step(model, tx, 10, domain=route))
    batch = {"image": images, "label": labels, "domain": domain_ids}
    return jax.device_get(step(state, batch, jax.random.key(0))[0].batch_stats)

  one_host = run(np.concatenate([real, syn]), np.repeat([0, 1], 8), (8, 8))
  layout = np.concatenate([real[:4], syn[:4], real[4:], syn[4:]])  # two hosts' halves
  ids = np.array([0] * 4 + [1] * 4 + [0] * 4 + [1] * 4)
  two_hosts = run(layout, ids, "batch")
  positional = run(layout, ids, (8, 8))  # what the train stage did before
  for a, b in zip(jax.tree.leaves(one_host), jax.tree.leaves(two_hosts)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  worst = max(float(np.max(np.abs(a - b))) for a, b in
              zip(jax.tree.leaves(one_host), jax.tree.leaves(positional)))
  assert worst > 0.1, worst


def _cfg():
  return helpers.tiny_config("/nonexistent", "", "", method="auxbn")
