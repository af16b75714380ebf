"""launch/: the exact commands both scripts run (--dry-run), their one-line errors, and a real
2-process CPU run started by `gpu_multihost.sh local` whose checkpoint a later 1-process run (in
this process, on one device) reuses."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from configs import digits_vit
from tests import helpers
from vitprune_jax import jobs

REPO = str(helpers.REPO)
TPU = os.path.join(REPO, 'launch', 'tpu_pod.sh')
GPU = os.path.join(REPO, 'launch', 'gpu_multihost.sh')
OVERRIDES = [
  '--config.init.vit_dir=gs://b/a run',
  "--config.prune.pruners=('none', 'cls_attention')",
]
# A tiny configs/digits_vit.py: what both the launched processes and the in-process jobs run.
TINY = {
  'model.hidden_size': 16,
  'model.num_layers': 1,
  'model.num_heads': 2,
  'model.mlp_dim': 32,
  'train.batch_size': 128,
}


def _script(path: str, *args: str, **env: str) -> subprocess.CompletedProcess:
  """Runs a launch script with only PATH, HOME and `env` set (no leak from the caller's env)."""
  base = {'PATH': os.environ['PATH'], 'HOME': os.environ.get('HOME', '/tmp'), 'TMPDIR': '/tmp'}
  return subprocess.run(
    ['bash', path, *args],
    cwd=REPO,
    env=dict(base, **env),
    capture_output=True,
    text=True,
    timeout=600,
  )


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.splitlines()


def _error(proc: subprocess.CompletedProcess) -> str:
  one_line = len(proc.stderr.splitlines()) == 1
  assert proc.returncode == 2 and not proc.stdout and one_line, proc.stderr
  return proc.stderr.strip()


TPU_ENV = dict(
  TPU_NAME='vit-pod',
  ZONE='us-central2-b',
  PROJECT='proj',
  CONFIG='configs/digits_vit.py',
  WORKDIR='gs://bucket/runs/digits',
)
GCLOUD = 'gcloud compute tpus tpu-vm'
WHERE = '--zone=us-central2-b --project=proj'
SSH_ALL = f'{GCLOUD} ssh vit-pod {WHERE} --worker=all'


def test_tpu_pod_creates_ships_installs_and_runs_on_all_workers():
  lines = _lines(_script(TPU, '--dry-run', *OVERRIDES, **TPU_ENV))
  assert lines[:-1] == [
    f"{GCLOUD} describe vit-pod {WHERE} '--format=value(state)'",
    f'{GCLOUD} create vit-pod {WHERE} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base',
    'bash -c \'cd "$1" && git ls-files -z -co --exclude-standard | tar -czf "$2" --null '
    f"--ignore-failed-read -T -' bash {REPO} /tmp/vitprune_jax_src_vit-pod.tgz",
    f'{GCLOUD} scp /tmp/vitprune_jax_src_vit-pod.tgz vit-pod:vitprune_jax_src.tgz {WHERE} '
    '--worker=all',
    f"{SSH_ALL} '--command=mkdir -p vitprune_jax && tar -xzf vitprune_jax_src.tgz -C vitprune_jax'",
    f"{SSH_ALL} '--command=cd vitprune_jax && python3 -m pip install --quiet -e . "
    "'\\''jax[tpu]==0.10.2'\\'''",
  ]
  # The run: one ssh to all workers, whose shell gets each override as one unchanged argument.
  *gcloud, command = shlex.split(lines[-1])
  assert gcloud == [*GCLOUD.split(), 'ssh', 'vit-pod', *WHERE.split(), '--worker=all']
  assert command.startswith('--command=cd vitprune_jax && ')
  assert shlex.split(command.removeprefix('--command=cd vitprune_jax && ')) == [
    'python3',
    '-m',
    'vitprune_jax.main',
    '--config',
    'configs/digits_vit.py',
    '--workdir',
    'gs://bucket/runs/digits',
    '--config.distributed.initialize=yes',
    *OVERRIDES,
  ]


def test_tpu_pod_reuses_an_existing_slice_and_clones_from_git():
  lines = _lines(
    _script(
      TPU,
      '--dry-run',
      TPU_EXISTS='1',
      REPO_URL='https://example.com/vitprune.git',
      REPO_REF='v1.0',
      REMOTE_DIR='code',
      JAX_SPEC='jax[tpu]',
      **TPU_ENV,
    )
  )
  assert len(lines) == 4 and not any(' create ' in line for line in lines)
  assert lines[1] == (
    f"{SSH_ALL} '--command=(test -d code/.git || git clone --quiet "
    'https://example.com/vitprune.git code) && git -C code fetch --quiet origin && '
    "git -C code checkout --quiet --force v1.0'"
  )
  assert lines[2].endswith(
    "'--command=cd code && python3 -m pip install --quiet -e . '\\''jax[tpu]'\\'''"
  )
  assert lines[3].startswith(f"{SSH_ALL} '--command=cd code && python3 -m")
  # SKIP_SETUP: describe, then the run; no copy and no pip.
  env = dict(TPU_ENV, PROJECT='')
  lines = _lines(_script(TPU, '--dry-run', TPU_EXISTS='1', SKIP_SETUP='1', **env))
  assert [shlex.split(line)[4] for line in lines] == ['describe', 'ssh']
  assert '--project' not in ' '.join(lines)


def test_tpu_pod_errors_are_one_line():
  assert _error(_script(TPU, '--dry-run', TPU_NAME='x')) == (
    'error: set ZONE CONFIG WORKDIR (see the top of ' + TPU + ')'
  )
  not_gs = _script(TPU, '--dry-run', **dict(TPU_ENV, WORKDIR='/tmp/run'))
  assert 'must be a gs:// path' in _error(not_gs)
  no_config = _script(TPU, '--dry-run', **dict(TPU_ENV, CONFIG='configs/nope.py'))
  assert 'is not a file' in _error(no_config)


def test_gpu_local_starts_n_processes_with_the_jax_env():
  lines = _lines(
    _script(
      GPU,
      '--dry-run',
      'local',
      *OVERRIDES,
      CONFIG='configs/digits_vit.py',
      WORKDIR='/r/x',
      NUM_PROCESSES='3',
      PORT='4000',
      PYTHON='/venv/bin/python',
    )
  )
  assert [shlex.split(line) for line in lines] == [
    [
      'env',
      'JAX_PLATFORMS=cpu',
      'JAX_COORDINATOR_ADDRESS=localhost:4000',
      'JAX_NUM_PROCESSES=3',
      f'JAX_PROCESS_ID={i}',
      '/venv/bin/python',
      '-m',
      'vitprune_jax.main',
      '--config',
      'configs/digits_vit.py',
      '--workdir',
      '/r/x',
      *OVERRIDES,
    ]
    for i in range(3)
  ]
  assert lines[0].endswith(
    " '--config.init.vit_dir=gs://b/a run' "
    "'--config.prune.pruners=('\\''none'\\'', '\\''cls_attention'\\'')'"
  )


def test_gpu_ssh_starts_process_i_on_host_i():
  lines = _lines(
    _script(
      GPU,
      '--dry-run',
      'ssh',
      OVERRIDES[0],
      CONFIG='c.py',
      WORKDIR='/nfs/run',
      HOSTS='gpu-a,gpu-b',
      REMOTE_DIR='/srv/vit',
      SSH_ARGS='-o BatchMode=yes',
    )
  )
  assert lines == [
    f"ssh -o BatchMode=yes {host} 'cd /srv/vit && exec env JAX_COORDINATOR_ADDRESS=gpu-a:12355 "
    f'JAX_NUM_PROCESSES=2 JAX_PROCESS_ID={i} python3 -m vitprune_jax.main --config c.py '
    "--workdir /nfs/run '\\''--config.init.vit_dir=gs://b/a run'\\'''"
    for i, host in enumerate(['gpu-a', 'gpu-b'])
  ]
  assert shlex.split(shlex.split(lines[1])[-1])[-1] == OVERRIDES[0]


@pytest.mark.parametrize(
  'nodelist, first',
  [('node7', 'node7'), ('gpu[03-05,09]', 'gpu03'), ('a[2,4],b1', 'a2'), ('n1,n2', 'n1')],
)
def test_gpu_slurm_derives_the_coordinator_from_the_node_list(nodelist, first):
  lines = _lines(
    _script(
      GPU,
      '--dry-run',
      'slurm',
      CONFIG='c.py',
      WORKDIR='/shared/run',
      SLURM_JOB_NODELIST=nodelist,
      SLURM_JOB_NUM_NODES='2',
    )
  )
  assert lines == [
    f'srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --chdir={REPO} env '
    f"JAX_COORDINATOR_ADDRESS={first}:12355 JAX_NUM_PROCESSES=2 bash -c 'export "
    'JAX_PROCESS_ID=$SLURM_PROCID && exec "$@"\' bash python3 -m vitprune_jax.main --config c.py '
    '--workdir /shared/run'
  ]


def test_gpu_slurm_one_process_per_gpu():
  lines = _lines(
    _script(
      GPU,
      '--dry-run',
      'slurm',
      OVERRIDES[0],
      CONFIG='c.py',
      WORKDIR='/shared/run',
      SLURM_JOB_NODELIST='g[1-4]',
      SLURM_JOB_NUM_NODES='4',
      PROCS_PER_NODE='8',
      SRUN_ARGS='--gres=gpu:8 --time=1:00:00',
    )
  )
  words = shlex.split(lines[0])
  assert words[:6] == [
    'srun',
    '--nodes=4',
    '--ntasks=32',
    '--ntasks-per-node=8',
    '--gres=gpu:8',
    '--time=1:00:00',
  ]
  assert words[words.index('-c') + 1] == (
    'export JAX_PROCESS_ID=$SLURM_PROCID JAX_LOCAL_DEVICE_IDS=$SLURM_LOCALID && exec "$@"'
  )
  assert 'JAX_NUM_PROCESSES=32' in words and words[-1] == OVERRIDES[0]


def test_gpu_errors_are_one_line():
  assert 'name a launcher' in _error(_script(GPU, '--dry-run'))
  assert "unknown launcher 'mpi'" in _error(_script(GPU, 'mpi'))
  assert _error(_script(GPU, '--dry-run', 'ssh', CONFIG='c.py')) == (
    'error: set WORKDIR (see the top of ' + GPU + ')'
  )
  assert 'set HOSTS' in _error(_script(GPU, '--dry-run', 'ssh', CONFIG='c.py', WORKDIR='/r'))
  assert 'set SLURM_JOB_NODELIST SLURM_JOB_NUM_NODES' in _error(
    _script(GPU, '--dry-run', 'slurm', CONFIG='c.py', WORKDIR='/r')
  )
  no_processes = _script(GPU, '--dry-run', 'local', CONFIG='c.py', WORKDIR='/r', NUM_PROCESSES='0')
  assert 'NUM_PROCESSES=0' in _error(no_processes)


def _tiny_job(workdir, overrides: dict[str, object]) -> None:
  """In this process, what `python -m vitprune_jax.main --config configs/digits_vit.py` runs with
  TINY and `overrides` ({'section.key': value}) as --config flags."""
  config = digits_vit.get_config()
  config.update_from_flattened_dict({**TINY, **overrides})
  jobs.run(config, str(workdir))


@pytest.mark.slow
# Unoptimised compiles, as in the launched processes (JAX_DISABLE_MOST_OPTIMIZATIONS); 1 device.
@pytest.mark.usefixtures('fast_compile', 'one_device_jobs')
def test_two_cpu_processes_train_once_and_a_one_process_run_reuses_the_checkpoint(tmp_path):
  """A real multi-process run: 2 JAX processes on localhost through `gpu_multihost.sh local`."""
  run, logs = tmp_path / 'run', tmp_path / 'logs'
  flags = [f'--config.{k}={v}' for k, v in TINY.items()]
  proc = _script(
    GPU,
    'local',
    *flags,
    '--config.train.num_epochs=1',
    CONFIG='configs/digits_vit.py',
    WORKDIR=str(run),
    LOG_DIR=str(logs),
    PYTHON=sys.executable,
    PORT=str(helpers.free_port()),
    TF_CPP_MIN_LOG_LEVEL='3',
    JAX_DISABLE_MOST_OPTIMIZATIONS='1',
  )
  texts = [(logs / f'process_{i}.log').read_text() for i in range(2)]
  assert proc.returncode == 0, proc.stderr + texts[0][-2000:] + texts[1][-2000:]
  for i, text in enumerate(texts):
    assert f'1 local, 2 global; process {i} of 2' in text
  trained = json.loads((run / 'train_results.json').read_text())
  # 1258 training images in batches of 128; every test image counted once.
  assert (trained['steps'], trained['num_examples']) == (1258 // 128, 359)
  assert len(list(run.glob('events.out.tfevents.*'))) == 1  # Only process 0 writes metrics.

  # Later, one process on one device: evaluate the best checkpoint (same test accuracy as the
  # 2-process run computed over both hosts' shards) and resume training from the latest one
  # (optimizer state included) in a copy.
  shutil.copytree(run, tmp_path / 'resumed')
  evaluate = {
    'mode': 'evaluate',
    'init.vit_dir': str(run),
    'viz.num_images': 0,
    'eval.throughput_repeats': 0,
  }
  _tiny_job(tmp_path / 'eval', evaluate)
  _tiny_job(tmp_path / 'resumed', {'train.num_epochs': 2})
  evaluated = json.loads((tmp_path / 'eval' / 'evaluate_results.json').read_text())
  assert evaluated['num_examples'] == 359 and evaluated['checkpoint_step'] == trained['best_step']
  assert evaluated['test_accuracy'] == pytest.approx(trained['test_accuracy'], abs=1e-9)
  resumed = json.loads((tmp_path / 'resumed' / 'train_results.json').read_text())
  steps = trained['steps']
  assert (resumed['resumed_from_step'], resumed['steps']) == (steps, 2 * steps)
