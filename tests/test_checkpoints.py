"""Checkpoint round trip, reuse by later runs, across device counts (in this process, on meshes over
subsets of the 8 CPU devices) and hosts, and clear errors that never delete anything."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vitprune_jax import checkpoints, parallel


def _tree(scale=1.0, width=3):
  kernel = jnp.arange(2 * width, dtype=jnp.float32).reshape(2, width)
  return {'dense': {'kernel': kernel * scale, 'bias': jnp.ones(width) * scale}}


def _save(workdir, step=7, val=0.5, width=3):
  ckpt = checkpoints.Checkpointer(str(workdir))
  opt = {
    'step': jnp.array(step),
    'rng': jax.random.PRNGKey(3),
    'opt_state': {'mu': _tree(0.1, width)},
  }
  meta = {'epoch': 1, 'val_accuracy': val, 'model': {'w': width}}
  ckpt.save(step, _tree(width=width), opt, meta, best=True)
  ckpt.wait()
  ckpt.close()
  return opt


def test_round_trip_restores_params_opt_and_meta(tmp_path):
  opt = _save(tmp_path)
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 7
  params, opt2, meta = ckpt.restore_latest(
    jax.tree_util.tree_map(jnp.zeros_like, _tree()), jax.tree_util.tree_map(jnp.zeros_like, opt)
  )
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
  expected = r"\['dense'\]\['bias'\] has shape \(3,\) .* \(4,\)"
  with pytest.raises(checkpoints.CheckpointError, match=expected):
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


def _placed(mesh):
  """One checkpoint's trees on `mesh`: params replicated, one optimizer leaf split over the devices
  (as a sharded optimizer state would be); and their shardings."""
  rep, split = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
  kernel, bias = jnp.arange(24.0).reshape(3, 8) / 3, jnp.linspace(-1, 1, 8)
  params = {'dense': {'kernel': kernel, 'bias': bias}}
  opt = {'mu': jnp.arange(16.0) / 7, 'step': jnp.array(5)}
  shardings = ({'dense': {'kernel': rep, 'bias': rep}}, {'mu': split, 'step': rep})
  return jax.device_put((params, opt), shardings), shardings


def _device_counts(tree) -> set[int]:
  return {len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(tree)}


@pytest.mark.parametrize('saved_on, restored_on', [(8, 1), (1, 8)])
def test_saved_on_some_devices_restores_on_others(tmp_path, saved_on, restored_on):
  """What a job saved on a pod slice restores on a laptop, and the other way round, unchanged."""
  (params, opt), _ = _placed(parallel.make_mesh(jax.devices()[:saved_on]))
  assert _device_counts((params, opt)) == {saved_on}
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.save(5, params, opt, {'epoch': 1, 'val_accuracy': 0.5}, best=True)
  ckpt.wait()
  ckpt.close()

  zeros, shardings = _placed(parallel.make_mesh(jax.devices()[:restored_on]))
  zeros = jax.device_put(jax.tree_util.tree_map(jnp.zeros_like, zeros), shardings)
  latest = checkpoints.Checkpointer(str(tmp_path), read_only=True).restore_latest(*zeros)
  best = checkpoints.load_params(*checkpoints.read_meta(str(tmp_path))[:2], zeros[0])
  restored, restored_opt, meta = latest
  assert meta == {'epoch': 1, 'val_accuracy': 0.5}
  for got, want in [((restored, restored_opt), (params, opt)), (best, params)]:
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    assert _device_counts(got) == {restored_on}
  assert restored_opt['mu'].sharding == shardings[1]['mu']  # Split as asked, not as saved.


def test_remote_run_dirs_are_kept_and_local_ones_made_absolute():
  # Not <cwd>/gs:/bucket/...
  assert checkpoints._abspath('gs://bucket/runs/deit/') == 'gs://bucket/runs/deit'
  assert checkpoints._abspath('runs/deit') == os.path.join(os.getcwd(), 'runs', 'deit')


@pytest.mark.slow
def test_two_processes_save_latest_and_best_at_the_same_steps(tmp_path):
  """Both managers save each step in the background on every host: their barriers must not mix (they
  hung). Two real JAX processes, one CPU device each (tests/scripts/checkpoint_two_hosts.py)."""
  port = str(helpers.free_port())
  procs = [
    helpers.start_script('checkpoint_two_hosts', port, str(i), str(tmp_path), devices=1)
    for i in range(2)
  ]
  outs = helpers.finish(procs, timeout=150)
  for i, out in enumerate(outs):
    assert f'saved {i}' in out
  assert checkpoints.Checkpointer(str(tmp_path), read_only=True).latest.all_steps() == [19, 20]
  assert checkpoints.read_meta(str(tmp_path))[1] == 20
