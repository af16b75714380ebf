"""Supervised training: loss goes down, schedules, a whole tiny run, exact resume, NaN handling."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import checkpoints
from vitprune_jax.errors import UserError
from vitprune_jax.training import train
from tests.helpers import tiny_config


def test_cross_entropy_ignores_padding_rows():
  logits = jnp.array([[2.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
  labels = jnp.array([0, 1, 1])
  full = train.cross_entropy(logits[:2], labels[:2], jnp.ones(2), 2)
  padded = train.cross_entropy(logits, labels, jnp.array([1.0, 1.0, 0.0]), 2)
  np.testing.assert_allclose(full, padded, rtol=1e-6)
  expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-5.0))])
  np.testing.assert_allclose(full, expected, rtol=1e-5)


def test_learning_rate_warms_up_then_decays(base_config):
  base_config.train.num_epochs = 10
  base_config.train.warmup_epochs = 2
  base_config.train.learning_rate = 1e-3
  fn = train.create_learning_rate_fn(base_config, steps_per_epoch=10)
  assert float(fn(0)) == 0.0
  np.testing.assert_allclose(float(fn(20)), 1e-3, rtol=1e-6)
  assert float(fn(10)) == pytest.approx(5e-4)
  assert float(fn(99)) < 1e-5


def test_train_step_lowers_loss_on_a_fixed_batch(base_config):
  config = tiny_config(base_config)
  model, info = train.build_model(config)
  lr_fn = train.create_learning_rate_fn(config, steps_per_epoch=1)
  optimizer = train.create_optimizer(config, lambda _: 1e-2)
  state = train.create_train_state(jax.random.PRNGKey(0), model, optimizer, info.image_shape)
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.normal(size=(32, 8, 8, 1)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 10, 32), jnp.int32), 'mask': jnp.ones(32)}
  step = jax.jit(lambda s, b: train.train_step(s, b, num_classes=10, label_smoothing=0.0, learning_rate_fn=lr_fn))
  losses = []
  for _ in range(25):
    state, m = step(state, batch)
    losses.append(float(m.compute()['loss']))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(state.step) == 25


def _params_of(workdir, step):
  ckpt = checkpoints.Checkpointer(workdir, read_only=True)
  items = ckpt.latest.restore(step)
  return items['params']


def test_tiny_run_writes_results_and_checkpoints(base_config, tmp_path):
  config = tiny_config(base_config)
  results = train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'train_results.json').read_text())
  assert saved['test_accuracy'] == results['test_accuracy']
  assert saved['split'] == 'test' and saved['num_examples'] == 359
  assert 0.0 <= saved['test_accuracy'] <= 1.0
  assert saved['steps'] == 2 * (1258 // 128)
  assert os.listdir(tmp_path / 'best') and os.listdir(tmp_path / 'checkpoints')
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))


def test_interrupted_and_resumed_run_matches_uninterrupted(base_config, tmp_path):
  """Halting mid-epoch (step 5 of 9 in epoch 0), then rerunning, ends with bit-identical params."""
  straight = tiny_config(base_config.copy_and_resolve_references())
  train.train_and_evaluate(straight, str(tmp_path / 'a'))

  halted = tiny_config(base_config.copy_and_resolve_references())
  halted.train.halt_after_steps = 5
  out = train.train_and_evaluate(halted, str(tmp_path / 'b'))
  assert out == {'halted_at_step': 5, 'total_steps': 18}
  assert not (tmp_path / 'b' / 'train_results.json').exists()
  halted.train.halt_after_steps = 0
  resumed = train.train_and_evaluate(halted, str(tmp_path / 'b'))
  assert resumed['resumed_from_step'] == 5

  a, b = _params_of(str(tmp_path / 'a'), 18), _params_of(str(tmp_path / 'b'), 18)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_resume_with_a_different_model_fails_cleanly_and_keeps_checkpoints(base_config, tmp_path):
  config = tiny_config(base_config)
  config.train.halt_after_steps = 3
  train.train_and_evaluate(config, str(tmp_path))
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  config.model.hidden_size = 32
  with pytest.raises(checkpoints.CheckpointError, match=r"does not match the model: .*shape"):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before


def test_nan_loss_stops_with_a_clear_error(base_config, tmp_path):
  config = tiny_config(base_config)
  config.train.learning_rate = 1e30
  config.train.grad_clip_norm = 1e30
  with pytest.raises(UserError, match='loss became nan'):
    train.train_and_evaluate(config, str(tmp_path))


def test_batch_larger_than_dataset_is_a_clear_error(base_config, tmp_path):
  config = tiny_config(base_config)
  config.train.batch_size = 4096
  with pytest.raises(UserError, match='exceeds'):
    train.train_and_evaluate(config, str(tmp_path))
