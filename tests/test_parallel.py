"""Data parallelism: the train step and the eval pass give the same numbers on 1 device, 8 simulated devices and
2 real processes on localhost; and when `maybe_initialize_distributed` joins a multi-process run."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import free_port, load_default_config
from vitprune_jax import parallel
from vitprune_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Three train steps on one fixed global batch, then the eval pass over the 359 digits test images with batches of
# 64 (the last one partial), unpruned and pruned, and the pruning picture (argv[1]). Under several processes each
# feeds its slice of the batch (and its shard of the test set) and process 0 prints the globally gathered numbers.
_SCRIPT = r'''
import json, sys
import jax, numpy as np
from jax.experimental import multihost_utils
from tests.helpers import load_default_config, tiny_config
from vitprune_jax import parallel, pruning
from vitprune_jax.evaluation import evaluate, visualize
from vitprune_jax.training import train
config = tiny_config(load_default_config())
parallel.maybe_initialize_distributed(config)
config.model.dropout_rate = 0.1  # Dropout keys must not depend on the device count either.
config.model.num_layers = 2  # So pruning after block 0 changes what the classifier sees.
config.eval.batch_size = 64
model, info = train.build_model(config)
mesh = parallel.make_mesh()
lr = train.create_learning_rate_fn(config, 10)
state = jax.jit(lambda k: train.create_train_state(k, model, train.create_optimizer(config, lr), info.image_shape),
                out_shardings=parallel.replicated_sharding(mesh))(jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
# Random weight matrices (the zero-initialised head would make every logit 0 and every loss ln 10).
eval_params = jax.device_put(jax.tree_util.tree_map(
    lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32) if x.ndim > 1 else x, state.params),
    parallel.replicated_sharding(mesh))
batch = {'image': rng.normal(size=(32, 8, 8, 1)).astype(np.float32),
         'label': rng.integers(0, 10, 32).astype(np.int32), 'mask': np.ones(32, np.float32)}
n = 32 // jax.process_count()
local = {k: v[jax.process_index() * n:(jax.process_index() + 1) * n] for k, v in batch.items()}
step = jax.jit(lambda s, b: train.train_step(s, b, num_classes=10, label_smoothing=0.1, learning_rate_fn=lr))
losses = []
for _ in range(3):
  state, m = step(state, parallel.shard_batch(local, mesh))
  losses.append(float(m.compute()['loss']))
params = multihost_utils.process_allgather(state.params, tiled=True)
evals = {}
for name in ('none', 'cls_attention'):
  pruner = None if name == 'none' else pruning.make_pruner(name, model.config, r_max=0.7, alpha=1.0)
  r = evaluate.evaluate_params(config, model, eval_params, 'test', mesh, pruner)
  evals[name] = {k: r[k] for k in ('accuracy', 'macro_f1', 'loss', 'num_examples', 'tokens_per_layer')}
config.prune.visualize_images = 2
visualize.draw_kept_patches(config, model, eval_params, 'test', sys.argv[1], mesh)
if jax.process_index() == 0:
  print(json.dumps({'devices': jax.device_count(), 'processes': jax.process_count(), 'losses': losses,
                    'params': [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(params)],
                    'eval': evals}))
'''


def _env(devices_per_process: int, **extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_COORDINATOR', 'JAX_NUM_PROC', 'JAX_PROCESS'))}
  return dict(env, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices_per_process}', JAX_PLATFORMS='cpu',
              TF_CPP_MIN_LOG_LEVEL='3', **extra)


def _start(env: dict[str, str], picture: pathlib.Path) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-c', _SCRIPT, str(picture)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  return out


def _result(out: str) -> dict:
  return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  return _result(_finish(_start(_env(1), tmp_path_factory.mktemp('one') / 'kept.png')))


def _assert_same(run: dict, reference: dict) -> None:
  loss_diff = max(abs(a - b) for a, b in zip(run['losses'], reference['losses']))
  param_diff = max(abs(a - b) for ra, rb in zip(run['params'], reference['params']) for a, b in zip(ra, rb))
  eval_diff = max(abs(run['eval'][n]['loss'] - r['loss']) for n, r in reference['eval'].items())
  print(f'vs 1 device: max loss diff {loss_diff:.2g}, max param diff {param_diff:.2g}, max eval loss diff '
        f'{eval_diff:.2g}')
  assert run['losses'] == pytest.approx(reference['losses'], abs=1e-5)
  for a, b in zip(reference['params'], run['params']):
    assert b == pytest.approx(a, abs=1e-5)
  for name, ref in reference['eval'].items():
    got = run['eval'][name]
    assert got['num_examples'] == ref['num_examples'] == 359
    assert got['accuracy'] == ref['accuracy'] and got['macro_f1'] == pytest.approx(ref['macro_f1'], abs=1e-12)
    assert got['loss'] == pytest.approx(ref['loss'], abs=1e-6)
    assert got['tokens_per_layer'] == ref['tokens_per_layer']


def test_eight_devices_match_one_device(one_device, tmp_path):
  eight = _result(_finish(_start(_env(8), tmp_path / 'kept.png')))
  assert (tmp_path / 'kept.png').stat().st_size > 1000
  assert (one_device['devices'], eight['devices']) == (1, 8)
  _assert_same(eight, one_device)


def test_two_processes_match_one_process(one_device, tmp_path):
  """Two real JAX processes (2 CPU devices each) joined over localhost through the launch scripts' env vars."""
  port = free_port()
  procs = [_start(_env(2, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                       JAX_PROCESS_ID=str(i)), tmp_path / 'kept.png') for i in range(2)]
  outs = [_finish(p) for p in procs]
  assert '{' not in outs[1]  # Only process 0 reports (gloo prints its connections to stdout).
  two = _result(outs[0])
  assert (two['processes'], two['devices']) == (2, 4)
  assert (tmp_path / 'kept.png').stat().st_size > 1000  # Drawn by process 0 from both hosts' images.
  _assert_same(two, one_device)


def test_global_batch_must_divide_over_devices(monkeypatch):
  monkeypatch.setattr(parallel.jax, 'device_count', lambda: 8)
  parallel.check_global_batch(64, 'train.batch_size')
  with pytest.raises(UserError, match='multiple of the device count'):
    parallel.check_global_batch(60, 'train.batch_size')


@pytest.mark.parametrize('env, expected', [
    ({}, None),
    ({'JAX_COORDINATOR_ADDRESS': 'h0:1234'}, 'JAX_COORDINATOR_ADDRESS'),
    ({'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '2', 'SLURM_PROCID': '1',
      'SLURM_LOCALID': '0'}, 'SLURM'),
    ({'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n1', 'SLURM_NTASKS': '1', 'SLURM_PROCID': '0',
      'SLURM_LOCALID': '0'}, None),  # A one-task job step is a plain run.
    ({'SLURM_JOB_ID': '7', 'SLURM_JOB_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '2'}, None),  # The batch script itself.
    ({'OMPI_MCA_orte_hnp_uri': '1.0;tcp://10.0.0.1:1', 'OMPI_COMM_WORLD_SIZE': '4'}, 'Open MPI'),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3', 'TPU_WORKER_ID': '2'}, 'TPU pod (GKE)'),
    ({'TPU_WORKER_HOSTNAMES': 'w0'}, None),
])
def test_detects_multiprocess_launches(env, expected):
  assert parallel.detect_multiprocess_launch(env) == expected


@pytest.fixture
def initialize_calls(monkeypatch):
  calls = []
  monkeypatch.setattr(parallel.jax.distributed, 'initialize', lambda *a, **k: calls.append((a, k)))
  return calls


def test_initializes_from_the_launch_env_without_cluster_detection(initialize_calls):
  config = load_default_config()
  env = {'JAX_COORDINATOR_ADDRESS': 'h0:1234', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}
  assert parallel.maybe_initialize_distributed(config, env)
  # 'deactivate': jax's SLURM detection would otherwise pin a per-host process to one GPU.
  assert initialize_calls == [(('h0:1234', 4, 3), {'cluster_detection_method': 'deactivate'})]


def test_config_overrides_the_env_and_yes_or_no_force_it(initialize_calls):
  config = load_default_config()
  assert not parallel.maybe_initialize_distributed(config, {})  # auto, nothing launched: a plain run.
  config.distributed.initialize = 'no'
  assert not parallel.maybe_initialize_distributed(config, {'JAX_COORDINATOR_ADDRESS': 'h0:1'})
  config.distributed.initialize = 'yes'
  assert parallel.maybe_initialize_distributed(config, {})  # E.g. a GCE TPU pod: jax asks the metadata server.
  config.distributed.update(initialize='auto', coordinator_address='h9:99', num_processes=2, process_id=0)
  assert parallel.maybe_initialize_distributed(config, {'JAX_COORDINATOR_ADDRESS': 'h0:1', 'JAX_PROCESS_ID': '1'})
  assert initialize_calls == [((None, None, None), {}),
                              (('h9:99', 2, 0), {'cluster_detection_method': 'deactivate'})]


def test_bad_distributed_settings_are_one_line_errors(monkeypatch):
  config = load_default_config()
  config.distributed.initialize = 'maybe'
  with pytest.raises(UserError, match="initialize='maybe'"):
    parallel.maybe_initialize_distributed(config, {})
  config.distributed.initialize = 'auto'
  with pytest.raises(UserError, match='JAX_NUM_PROCESSES'):
    parallel.maybe_initialize_distributed(config, {'JAX_COORDINATOR_ADDRESS': 'h0:1', 'JAX_NUM_PROCESSES': 'two'})

  def fail(*args, **kwargs):
    raise ValueError('Number of processes must be defined.')

  monkeypatch.setattr(parallel.jax.distributed, 'initialize', fail)
  with pytest.raises(UserError, match='Number of processes must be defined.*JAX_NUM_PROCESSES'):
    parallel.maybe_initialize_distributed(config, {'JAX_COORDINATOR_ADDRESS': 'h0:1'})
