"""Supervised training as pure functions: the loss, the schedule, one step, the loop predicate."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax.models import vit
from vitprune_jax.training import loop, train


def test_cross_entropy_ignores_padding_rows():
  logits = jnp.array([[2.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
  labels = jnp.array([0, 1, 1])
  full = train.cross_entropy(logits[:2], labels[:2], jnp.ones(2), 2)
  padded = train.cross_entropy(logits, labels, jnp.array([1.0, 1.0, 0.0]), 2)
  np.testing.assert_allclose(full, padded, rtol=1e-6)
  expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-5.0))])
  np.testing.assert_allclose(full, expected, rtol=1e-5)


def test_learning_rate_warms_up_then_decays():
  fn = train.create_learning_rate_fn(1e-3, steps_per_epoch=10, num_epochs=10, warmup_epochs=2)
  assert float(fn(0)) == 0.0
  np.testing.assert_allclose(float(fn(20)), 1e-3, rtol=1e-6)
  assert float(fn(10)) == pytest.approx(5e-4)
  assert float(fn(99)) < 1e-5
  deit = train.create_learning_rate_fn(
    1e-3, steps_per_epoch=10, num_epochs=10, warmup_epochs=2, initial_lr=1e-6, final_lr=1e-5
  )
  assert float(deit(0)) == pytest.approx(1e-6, rel=1e-4)  # float32.
  assert float(deit(10)) == pytest.approx((1e-6 + 1e-3) / 2, rel=1e-5)
  assert float(deit(100)) == pytest.approx(1e-5, rel=1e-4)
  assert float(deit(60)) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-5)  # Cosine midpoint.


def test_train_step_lowers_loss_on_a_fixed_batch():
  model = vit.create_model(
    vit.make_vit_config(
      'digits',
      num_classes=10,
      image_size=8,
      num_channels=1,
      hidden_size=16,
      num_layers=1,
      num_heads=2,
      mlp_dim=32,
    )
  )
  lr_fn = lambda _: 1e-2
  optimizer = train.create_optimizer(lr_fn, weight_decay=0.05, grad_clip_norm=1.0)
  state = train.create_train_state(jax.random.PRNGKey(0), model, optimizer, (8, 8, 1))
  rng = np.random.default_rng(0)
  batch = {
    'image': jnp.asarray(rng.normal(size=(32, 8, 8, 1)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 10, 32), jnp.int32),
    'mask': jnp.ones(32),
  }
  step = jax.jit(
    lambda s, b: train.train_step(s, b, num_classes=10, label_smoothing=0.0, learning_rate_fn=lr_fn)
  )
  losses = []
  for _ in range(25):
    state, m = step(state, batch)
    losses.append(float(m.compute()['loss']))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 25


def test_itstime_fires_on_the_cadence_the_last_step_and_a_halt():
  due = [s for s in range(1, 11) if loop.itstime(s, 4, 10)]
  assert due == [4, 8, 10]
  assert [s for s in range(1, 11) if loop.itstime(s, 4, 10, halt_step=6)] == [4, 6, 8, 10]
  assert [s for s in range(1, 6) if loop.itstime(s, 0, 5)] == [5]


def test_eta_is_the_remaining_steps_at_the_rate_so_far(monkeypatch):
  clock = iter([100.0, 110.0])
  monkeypatch.setattr(loop.time, 'perf_counter', lambda: next(clock))
  eta = loop.Eta(start_step=0, total_steps=30)
  assert eta(10) == '1.0 steps/s, ETA 0:20'
