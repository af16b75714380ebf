"""Checkpoint round trip, reuse by later runs, across device counts, and clear errors that never delete anything."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import free_port
from vitprune_jax import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# Saves or restores one checkpoint on however many devices XLA_FLAGS gives: params replicated, one optimizer
# leaf split over the devices (as a sharded optimizer state would be). Prints what it restored.
_DEVICES_SCRIPT = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
from vitprune_jax import checkpoints, parallel
mode, workdir = sys.argv[1], sys.argv[2]
mesh = parallel.make_mesh()
rep, split = parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)
params = {'dense': {'kernel': jnp.arange(24.0).reshape(3, 8) / 3, 'bias': jnp.linspace(-1.0, 1.0, 8)}}
opt = {'mu': jnp.arange(16.0) / 7, 'step': jnp.array(5)}
shardings = ({'dense': {'kernel': rep, 'bias': rep}}, {'mu': split, 'step': rep})
params, opt = jax.device_put((params, opt), shardings)
out = {'devices': jax.device_count()}
if mode == 'save':
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(5, params, opt, {'epoch': 1, 'val_accuracy': 0.5}, best=True)
  ckpt.wait()
  ckpt.close()
else:
  zeros = jax.device_put(jax.tree_util.tree_map(jnp.zeros_like, (params, opt)), shardings)
  restored, restored_opt, meta = checkpoints.Checkpointer(workdir, read_only=True).restore_latest(*zeros)
  best = checkpoints.load_params(*checkpoints.read_meta(workdir)[:2], zeros[0])
  trees = {'latest': (restored, restored_opt), 'best': best}
  out.update(meta=meta, equal={k: jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), t, (params, opt) if k == 'latest' else params))
      for k, t in trees.items()},
      placed_on=sorted({len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(trees)}))
print(json.dumps(out))
'''


def _on_devices(n: int, *args: str) -> subprocess.Popen:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}', JAX_PLATFORMS='cpu',
             TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen([sys.executable, '-c', _DEVICES_SCRIPT, *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _output(proc: subprocess.Popen) -> dict:
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def test_saved_on_eight_devices_restores_on_one_and_back(tmp_path):
  """What a job saved on a pod slice restores on a laptop, and the other way round, with equal values."""
  saves = [_on_devices(8, 'save', str(tmp_path / 'eight')), _on_devices(1, 'save', str(tmp_path / 'one'))]
  assert [_output(p)['devices'] for p in saves] == [8, 1]
  restores = [_on_devices(1, 'restore', str(tmp_path / 'eight')), _on_devices(8, 'restore', str(tmp_path / 'one'))]
  for n, out in zip((1, 8), [_output(p) for p in restores]):
    assert out['devices'] == n and out['placed_on'] == [n]
    assert out['equal'] == {'latest': True, 'best': True}
    assert out['meta'] == {'epoch': 1, 'val_accuracy': 0.5}


def test_remote_run_dirs_are_kept_and_local_ones_made_absolute():
  assert checkpoints._abspath('gs://bucket/runs/deit/') == 'gs://bucket/runs/deit'  # Not <cwd>/gs:/bucket/...
  assert checkpoints._abspath('runs/deit') == os.path.join(os.getcwd(), 'runs', 'deit')


_TWO_HOSTS_SCRIPT = r'''
import sys
import jax, jax.numpy as jnp
jax.distributed.initialize(f'localhost:{sys.argv[1]}', 2, int(sys.argv[2]))
from vitprune_jax import checkpoints, parallel
rep = parallel.replicated_sharding(parallel.make_mesh())
params, opt = jax.jit(lambda: ({'w': jnp.ones((64, 64))}, {'mu': jnp.zeros((64, 64)), 'step': jnp.array(0)}),
                      out_shardings=rep)()
ckpt = checkpoints.Checkpointer(sys.argv[3])
for step in range(1, 21):
  ckpt.save(step, params, opt, {'val_accuracy': step / 100}, best=True)
ckpt.wait()
ckpt.close()
print('saved', jax.process_index())
'''


def test_two_processes_save_latest_and_best_at_the_same_steps(tmp_path):
  """Both managers save each step in the background on every host: their barriers must not mix (they hung)."""
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  procs = [subprocess.Popen([sys.executable, '-c', _TWO_HOSTS_SCRIPT, str(port), str(i), str(tmp_path)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=150) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f'saved {i}' in out, err[-3000:]
  assert checkpoints.Checkpointer(str(tmp_path), read_only=True).latest.all_steps() == [19, 20]
  assert checkpoints.read_meta(str(tmp_path))[1] == 20
