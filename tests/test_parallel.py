"""Data parallelism: the train step and the eval pass give the same numbers on 1 device, 8 simulated
devices (in this process, on meshes over subsets of tests/conftest.py's 8 CPU devices) and 2 real
JAX processes on localhost; and when `maybe_initialize_distributed` joins a multi-process run."""

import math

import jax
import numpy as np
import pytest

from tests import helpers
from tests.scripts import parallel_run
from vitprune_jax import parallel
from vitprune_jax.errors import UserError


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  picture = tmp_path_factory.mktemp('one') / 'kept.png'
  with helpers.fast_compile():
    return parallel_run.run(parallel.make_mesh(jax.devices()[:1]), str(picture))


def test_one_device_numbers(one_device):
  """What every other device count must reproduce, where it can be worked out by hand."""
  assert one_device['devices'] == 1
  # The head starts at zero: every logit 0, so the first loss is ln 10 whatever the smoothing.
  assert one_device['losses'][0] == pytest.approx(math.log(10), abs=1e-6)
  assert one_device['losses'][2] < one_device['losses'][0]
  for name, tokens in (('none', [17.0, 17.0]), ('cls_attention', [11.0, 4.0])):
    # 16 patches + CLS; cls_attention keeps floor(16 * (1 - 0.7 / 2)) = 10 patches after block 0,
    # then floor(10 * (1 - 0.7)) = 3 after block 1.
    got = one_device['eval'][name]
    assert (got['num_examples'], got['tokens_per_layer']) == (359, tokens)
    assert np.asarray(got['kept_counts']).shape == (359, 2)
  masks = np.asarray(one_device['masks'])
  assert masks.shape == (32, 2, 17)  # The fixed batch, every host's images.
  np.testing.assert_array_equal(masks.sum(axis=-1), np.tile([11, 4], (32, 1)))
  assert masks[:, :, 0].all()  # CLS is never pruned.


def _assert_same(run: dict, reference: dict) -> None:
  loss_diff = max(abs(a - b) for a, b in zip(run['losses'], reference['losses']))
  param_diff = max(
    abs(a - b) for ra, rb in zip(run['params'], reference['params']) for a, b in zip(ra, rb)
  )
  eval_diff = max(abs(run['eval'][n]['loss'] - r['loss']) for n, r in reference['eval'].items())
  print(
    f'vs 1 device: max loss diff {loss_diff:.2g}, max param diff {param_diff:.2g}, '
    f'max eval loss diff {eval_diff:.2g}'
  )
  assert run['losses'] == pytest.approx(reference['losses'], abs=1e-5)
  for a, b in zip(reference['params'], run['params']):
    assert b == pytest.approx(a, abs=1e-5)
  for name, ref in reference['eval'].items():
    got = run['eval'][name]
    assert got['num_examples'] == ref['num_examples'] == 359
    assert got['accuracy'] == ref['accuracy']
    assert got['macro_f1'] == pytest.approx(ref['macro_f1'], abs=1e-12)
    assert got['loss'] == pytest.approx(ref['loss'], abs=1e-6)
    assert got['tokens_per_layer'] == ref['tokens_per_layer']
    assert got['kept_counts'] == ref['kept_counts']
  assert run['masks'] == reference['masks']


def test_eight_devices_match_one_device(one_device, tmp_path):
  with helpers.fast_compile():  # As `one_device`.
    eight = parallel_run.run(parallel.make_mesh(), str(tmp_path / 'kept.png'))
  assert (tmp_path / 'kept.png').stat().st_size > 1000
  assert eight['devices'] == 8
  _assert_same(eight, one_device)


@pytest.mark.slow
def test_two_processes_match_one_process(one_device, tmp_path):
  """Two real JAX processes (2 CPU devices each) joined over localhost through the launch env."""
  port = helpers.free_port()
  picture = str(tmp_path / 'kept.png')
  procs = [
    helpers.start_script(
      'parallel_run',
      picture,
      devices=2,
      JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
      JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID=str(i),
      JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # As `one_device`.
    )
    for i in range(2)
  ]
  outs = helpers.finish(procs)
  assert '{' not in outs[1]  # Only process 0 reports (gloo prints its connections to stdout).
  two = helpers.last_json(outs[0])
  assert (two['processes'], two['devices']) == (2, 4)
  # Drawn by process 0 from both hosts' images.
  assert (tmp_path / 'kept.png').stat().st_size > 1000
  _assert_same(two, one_device)


def test_every_test_process_has_eight_cpu_devices():
  """tests/conftest.py sets them before JAX loads; meshes take any subset."""
  assert [d.platform for d in jax.devices()] == ['cpu'] * 8
  assert parallel.make_mesh().shape == {parallel.DATA_AXIS: 8}
  assert list(parallel.make_mesh(jax.devices()[2:4]).devices) == jax.devices()[2:4]
  with helpers.default_mesh(jax.devices()[:1]):  # What `one_device_jobs` gives jobs.
    assert list(parallel.make_mesh().devices) == jax.devices()[:1]
    assert parallel.make_mesh(jax.devices()[1:3]).size == 2
  assert parallel.make_mesh().size == 8


def test_global_batch_must_divide_over_devices():
  parallel.check_global_batch(64, 'train.batch_size')
  with pytest.raises(UserError, match=r'multiple of the device count \(8\)'):
    parallel.check_global_batch(60, 'train.batch_size')


_SLURM_STEP = {'SLURM_JOB_ID': '7', 'SLURM_PROCID': '1', 'SLURM_LOCALID': '0'}


@pytest.mark.parametrize(
  'env, expected',
  [
    ({}, None),
    ({'JAX_COORDINATOR_ADDRESS': 'h0:1234'}, 'JAX_COORDINATOR_ADDRESS'),
    (dict(_SLURM_STEP, SLURM_STEP_NODELIST='n[1-2]', SLURM_NTASKS='2'), 'SLURM'),
    # A one-task job step is a plain run.
    (dict(_SLURM_STEP, SLURM_STEP_NODELIST='n1', SLURM_NTASKS='1', SLURM_PROCID='0'), None),
    # The batch script itself.
    ({'SLURM_JOB_ID': '7', 'SLURM_JOB_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '2'}, None),
    (
      {'OMPI_MCA_orte_hnp_uri': '1.0;tcp://10.0.0.1:1', 'OMPI_COMM_WORLD_SIZE': '4'},
      'Open MPI',
    ),
    ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3', 'TPU_WORKER_ID': '2'}, 'TPU pod (GKE)'),
    ({'TPU_WORKER_HOSTNAMES': 'w0'}, None),
  ],
)
def test_detects_multiprocess_launches(env, expected):
  assert parallel.detect_multiprocess_launch(env) == expected


@pytest.fixture
def initialize_calls(monkeypatch):
  calls = []
  monkeypatch.setattr(parallel.jax.distributed, 'initialize', lambda *a, **k: calls.append((a, k)))
  return calls


def test_initializes_from_the_launch_env_without_cluster_detection(initialize_calls):
  env = {'JAX_COORDINATOR_ADDRESS': 'h0:1234', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}
  assert parallel.maybe_initialize_distributed(env=env)
  # 'deactivate': jax's SLURM detection would otherwise pin a per-host process to one GPU.
  assert initialize_calls == [(('h0:1234', 4, 3), {'cluster_detection_method': 'deactivate'})]


def test_arguments_override_the_env_and_yes_or_no_force_it(initialize_calls):
  assert not parallel.maybe_initialize_distributed(env={})  # auto, nothing launched: a plain run.
  assert not parallel.maybe_initialize_distributed('no', env={'JAX_COORDINATOR_ADDRESS': 'h0:1'})
  # E.g. a GCE TPU pod: jax asks the metadata server.
  assert parallel.maybe_initialize_distributed('yes', env={})
  launched = {'JAX_COORDINATOR_ADDRESS': 'h0:1', 'JAX_PROCESS_ID': '1'}
  assert parallel.maybe_initialize_distributed('auto', 'h9:99', 2, 0, env=launched)
  assert initialize_calls == [
    ((None, None, None), {}),
    (('h9:99', 2, 0), {'cluster_detection_method': 'deactivate'}),
  ]


def test_defaults_are_the_configs():
  """main.py passes `config.distributed`; its defaults mean what the function's defaults mean."""
  defaults = helpers.load_default_config().distributed
  assert parallel.maybe_initialize_distributed.__defaults__[:4] == (
    defaults.initialize,
    defaults.coordinator_address,
    defaults.num_processes,
    defaults.process_id,
  )


def test_bad_distributed_settings_are_one_line_errors(monkeypatch):
  with pytest.raises(UserError, match="initialize='maybe'"):
    parallel.maybe_initialize_distributed('maybe', env={})
  with pytest.raises(UserError, match='JAX_NUM_PROCESSES'):
    parallel.maybe_initialize_distributed(
      env={'JAX_COORDINATOR_ADDRESS': 'h0:1', 'JAX_NUM_PROCESSES': 'two'}
    )

  def fail(*args, **kwargs):
    raise ValueError('Number of processes must be defined.')

  monkeypatch.setattr(parallel.jax.distributed, 'initialize', fail)
  with pytest.raises(UserError, match='Number of processes must be defined.*JAX_NUM_PROCESSES'):
    parallel.maybe_initialize_distributed(env={'JAX_COORDINATOR_ADDRESS': 'h0:1'})
