"""Checkpoint round trip, reuse by later runs, and clear errors that never delete anything."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import checkpoints


def _tree(scale=1.0, width=3):
  return {'dense': {'kernel': jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width) * scale,
                    'bias': jnp.ones(width) * scale}}


def _save(workdir, step=7, val=0.5, width=3):
  ckpt = checkpoints.Checkpointer(str(workdir))
  opt = {'step': jnp.array(step), 'rng': jax.random.PRNGKey(3), 'opt_state': {'mu': _tree(0.1, width)}}
  ckpt.save(step, _tree(width=width), opt, {'epoch': 1, 'val_accuracy': val, 'model': {'w': width}}, best=True)
  ckpt.wait()
  ckpt.close()
  return opt


def test_round_trip_restores_params_opt_and_meta(tmp_path):
  opt = _save(tmp_path)
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 7
  params, opt2, meta = ckpt.restore_latest(jax.tree_util.tree_map(jnp.zeros_like, _tree()),
                                           jax.tree_util.tree_map(jnp.zeros_like, opt))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, _tree())
  jax.tree_util.tree_map(np.testing.assert_array_equal, opt2, opt)
  assert meta['epoch'] == 1 and meta['model'] == {'w': 3}


def test_best_keeps_the_highest_validation_accuracy(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  opt = {'step': jnp.array(0)}
  for step, val in [(1, 0.3), (2, 0.9), (3, 0.6)]:
    ckpt.save(step, _tree(float(step)), opt, {'val_accuracy': val}, best=True)
  ckpt.wait()
  assert ckpt.best.best_step() == 2
  assert ckpt.latest.all_steps() == [2, 3]  # max_to_keep=2 for resuming.
  run_dir, step, meta = checkpoints.read_meta(str(tmp_path))
  assert step == 2 and meta['val_accuracy'] == 0.9 and run_dir.endswith('best')
  params = checkpoints.load_params(run_dir, step, _tree())
  np.testing.assert_array_equal(params['dense']['bias'], 2.0 * np.ones(3))


def test_shape_mismatch_names_the_parameter_and_deletes_nothing(tmp_path):
  _save(tmp_path, width=3)
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError, match=r"\['dense'\]\['bias'\] has shape \(3,\) .* \(4,\)"):
    ckpt.restore_latest(_tree(width=4), None)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before


def test_corrupt_checkpoint_is_a_clear_error_and_is_kept(tmp_path):
  _save(tmp_path)
  step_dir = tmp_path / 'checkpoints' / '7'
  for root, _, files in os.walk(step_dir / 'params'):
    for f in files:
      with open(os.path.join(root, f), 'wb') as fh:
        fh.write(b'garbage')
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError, match='left untouched'):
    ckpt.restore_latest(_tree(), None)
  assert step_dir.exists() and os.listdir(step_dir / 'params')


def test_no_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='No checkpoint found'):
    checkpoints.read_meta(str(tmp_path))
