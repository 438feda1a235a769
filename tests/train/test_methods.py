"""Method semantics: bridged head reinit, Mixup per phase, mix ratio, AuxBN evaluation."""
import json

import jax
import numpy as np
import pytest

from synth_jax import models, runs
from synth_jax.models import weights
from synth_jax.train import loop, stage, steps as steps_lib
from tests.train import helpers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return helpers.write_data(tmp_path_factory.mktemp("data"))


def test_plan_defaults():
  c = helpers.tiny_config("/tmp/unused", "", "", method="bridged")
  # Issue 9's bridged: phase-1 Mixup on, phase-2 Mixup off, head re-initialised before phase 2.
  assert [(s.data, s.mixup_alpha, s.reinit_head) for s in stage.plan(c)] == [
      ("synthetic", 0.2, False), ("real", 0.0, True)]
  c.method = "bridged++"  # the paper's name for the same plan
  assert [(s.mixup_alpha, s.reinit_head) for s in stage.plan(c)] == [(0.2, False), (0.0, True)]
  c.method = "bridged_plain"
  assert [(s.mixup_alpha, s.reinit_head) for s in stage.plan(c)] == [(0.0, False), (0.0, False)]
  c.method = "bridged_fc"
  assert [(s.mixup_alpha, s.reinit_head) for s in stage.plan(c)] == [(0.0, False), (0.0, True)]
  c.phase1.mixup_alpha = 0.0  # explicit settings win over the method's defaults
  c.method = "bridged"
  assert stage.plan(c)[0].mixup_alpha == 0.0
  c.phase1.mixup_alpha = None
  c.phase2.mixup_alpha = 0.4
  assert stage.plan(c)[1].mixup_alpha == 0.4
  c.method = "auxbn"
  assert [s.data for s in stage.plan(c)] == ["paired"]


def test_bridged_reinits_only_head_and_mixup_phase1_only(data, tmp_path, monkeypatch):
  real, syn = data
  # on a data x fsdp x tensor mesh: the state is created sharded and every step keeps it placed
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, method="bridged", fsdp=True,
                            **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  seen, made = [], []
  orig_loop, orig_make = loop.run_phase, steps_lib.make_train_step

  def spy_loop(run, state, *a, **k):
    seen.append((run.index, jax.device_get(state.params)))
    before = [x.sharding.spec for x in jax.tree.leaves(state.params)]
    out = orig_loop(run, state, *a, **k)
    assert [x.sharding.spec for x in jax.tree.leaves(out.params)] == before
    assert any("fsdp" in spec for spec in before)
    seen.append((run.index, jax.device_get(out.params)))
    return out

  def spy_make(*a, **k):
    made.append(k)
    return orig_make(*a, **k)

  monkeypatch.setattr(loop, "run_phase", spy_loop)
  monkeypatch.setattr(steps_lib, "make_train_step", spy_make)
  result = runs.run_stage("train", stage.train, cfg)
  assert [m["mixup_alpha"] for m in made] == [0.2, 0.0]
  (_, start1), (_, end1), (_, start2), _ = seen
  # Stage 1 trained the whole network (including the head) ...
  assert not np.allclose(start1["head"]["kernel"], end1["head"]["kernel"])
  # ... and between the phases only the head changed: a fresh torch.nn.Linear-style head.
  f_end, f_start = weights.flatten(end1), weights.flatten(start2)
  assert set(f_end) == set(f_start)
  changed = sorted(k for k in f_end if not np.array_equal(f_end[k], f_start[k]))
  assert changed == ["head/bias", "head/kernel"]
  assert np.all(f_start["head/bias"] == 0)
  lim = 1 / np.sqrt(f_start["head/kernel"].shape[0])
  assert np.abs(f_start["head/kernel"]).max() <= lim
  assert [s["reinit_head"] for s in result["phases"]] == [False, True]
  assert json.load(open(tmp_path / "run" / "results.json"))["top1"] == result["top1"]


def test_mix_honours_ratio(data, tmp_path):
  real, syn = data
  cfg = helpers.tiny_config(tmp_path, real, syn, method="mix", mix_ratio=0.25)
  r, s, _ = stage.open_data(cfg, True)
  ds, _ = stage.phase_dataset(cfg, stage.plan(cfg)[0], 0, r, s)
  it = iter(ds)
  domains = np.concatenate([next(it)["domain"] for _ in range(16)])
  assert abs(domains.mean() - 0.25) < 0.04, domains.mean()


@pytest.mark.slow
def test_auxbn_trains_both_domains_and_evaluates_on_real(data, tmp_path):
  real, syn = data
  cfg = helpers.tiny_config(tmp_path / "run", real, syn, method="auxbn", steps2=3)
  runs.run_stage("train", stage.train, cfg)
  mngr = loop.checkpoint_manager(str(tmp_path / "run"), 2)
  two, params, stats = models.ResNetVariant("basic:1,1,1,1").init(
      jax.random.key(0), num_classes=10, domains=("real", "synthetic"), image_size=16)
  from synth_jax.train.state import TrainState
  tx = stage.state_lib.make_optimizer(cfg, cfg.phase2, 3)
  st = loop.restore(mngr, mngr.latest_step(), TrainState.create(params, stats, tx))
  mean = st.batch_stats["bn1"]["mean"]
  assert mean.shape[0] == 2 and not np.allclose(mean[0], mean[1])  # per-domain statistics
  # Evaluation == a plain one-domain model given the real (row 0) statistics.
  one = models.ResNetVariant("basic:1,1,1,1")(num_classes=10, domains=("real",))
  real_stats = jax.tree.map(lambda x: x[0], st.batch_stats)
  syn_stats = jax.tree.map(lambda x: x[1], st.batch_stats)
  x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
  batch = {"image": x, "label": np.arange(8) % 10, "mask": np.ones(8, bool)}
  got = two.apply({"params": st.params, "batch_stats": st.batch_stats}, x)[0]
  want = one.apply({"params": st.params, "batch_stats": real_stats}, x)[0]
  other = one.apply({"params": st.params, "batch_stats": syn_stats}, x)[0]
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert not np.allclose(got, other, atol=1e-3)
  ev = steps_lib.make_eval_step(two, 10)(st.params, st.batch_stats, batch)
  np.testing.assert_array_equal(ev["top1"], np.argmax(want, -1) == batch["label"])


def test_optimizer_decay_mask_and_accumulation():
  import jax.numpy as jnp
  import ml_collections
  from synth_jax.train import state as state_lib
  params = {"conv1": {"kernel": jnp.ones((3, 3, 3, 4))}, "bn1": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
            "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)}}
  assert state_lib.decay_mask(params) == {"conv1": {"kernel": True}, "bn1": {"scale": False, "bias": False},
                                          "head": {"kernel": True, "bias": False}}
  cfg = ml_collections.ConfigDict(dict(grad_accum=2, optimizer="sgd", weight_decay=0.1, momentum=0.9))
  tx = state_lib.make_optimizer(cfg, ml_collections.ConfigDict(dict(learning_rate=1.0, warmup_fraction=0.0)), 4)
  zero = jax.tree.map(jnp.zeros_like, params)
  opt = tx.init(params)
  upd, opt = tx.update(zero, opt, params)        # micro-step 1: nothing applied yet
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(upd))
  upd, opt = tx.update(zero, opt, params)        # micro-step 2: only weight decay, kernels only
  assert float(jnp.abs(upd["bn1"]["scale"]).max()) == 0 and float(jnp.abs(upd["head"]["bias"]).max()) == 0
  np.testing.assert_allclose(upd["conv1"]["kernel"], -0.1, rtol=1e-6)
