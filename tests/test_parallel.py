"""The same train step on 8 simulated CPU devices and on 1 gives the same loss and parameters."""
import json
import os
import subprocess
import sys

import pytest

from vitprune_jax import parallel
from vitprune_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_STEP_SCRIPT = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
from tests.helpers import load_default_config, tiny_config
from vitprune_jax import parallel
from vitprune_jax.training import train
config = tiny_config(load_default_config())
config.model.dropout_rate = 0.1  # Dropout keys must not depend on the device count either.
model, info = train.build_model(config)
mesh = parallel.make_mesh()
lr = train.create_learning_rate_fn(config, 10)
state = jax.jit(lambda k: train.create_train_state(k, model, train.create_optimizer(config, lr), info.image_shape),
                out_shardings=parallel.replicated_sharding(mesh))(jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
batch = {'image': rng.normal(size=(32, 8, 8, 1)).astype(np.float32),
         'label': rng.integers(0, 10, 32).astype(np.int32), 'mask': np.ones(32, np.float32)}
step = jax.jit(lambda s, b: train.train_step(s, b, num_classes=10, label_smoothing=0.1, learning_rate_fn=lr))
losses = []
for _ in range(3):
  state, m = step(state, parallel.shard_batch(batch, mesh))
  losses.append(float(m.compute()['loss']))
leaves = [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(state.params)]
print(json.dumps({'devices': jax.device_count(), 'losses': losses, 'params': leaves}))
'''


def _run(num_devices: int) -> dict:
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([sys.executable, '-c', _STEP_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_devices_match_one_device():
  one, eight = _run(1), _run(8)
  assert (one['devices'], eight['devices']) == (1, 8)
  assert eight['losses'] == pytest.approx(one['losses'], abs=1e-5)
  for a, b in zip(one['params'], eight['params']):
    assert b == pytest.approx(a, abs=1e-5)


def test_global_batch_must_divide_over_devices(monkeypatch):
  monkeypatch.setattr(parallel.jax, 'device_count', lambda: 8)
  parallel.check_global_batch(64, 'train.batch_size')
  with pytest.raises(UserError, match='multiple of the device count'):
    parallel.check_global_batch(60, 'train.batch_size')
