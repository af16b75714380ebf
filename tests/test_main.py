"""The command line as a user runs it: train, evaluate the checkpoint, a clean terminal, one-line
errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
  '--config.model.hidden_size=16',
  '--config.model.num_layers=1',
  '--config.model.num_heads=2',
  '--config.model.mlp_dim=32',
  '--config.train.batch_size=128',
  '--config.train.num_epochs=1',
]


def _env():
  # A user's environment: none of the test process's simulated devices or quieting variables.
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'TF_CPP_MIN_LOG_LEVEL')}
  return dict(env, JAX_PLATFORMS='cpu')


def _cli(*args, workdir):
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'vitprune_jax.main',
      '--config',
      'configs/digits_vit.py',
      '--workdir',
      str(workdir),
      *args,
    ],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )


def _error_line(proc):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ')
  return last


@pytest.mark.slow
def test_train_then_evaluate_from_the_cli(tmp_path):
  proc = _cli(*TINY, workdir=tmp_path / 'run')
  assert proc.returncode == 0, proc.stderr[-3000:]
  # A clean terminal: no accelerator probing, TF or oneDNN notices; one line per epoch with the ETA.
  for noise in ('TPU', 'CUDA', 'cuda', 'oneDNN', 'GPU'):
    assert noise not in proc.stderr, proc.stderr[:2000]
  epochs = [line for line in proc.stderr.splitlines() if 'Epoch 1/1' in line]
  assert len(epochs) == 1 and 'ETA' in epochs[0], proc.stderr[-2000:]
  trained = json.loads((tmp_path / 'run' / 'train_results.json').read_text())
  assert trained['steps'] == 1258 // 128 and trained['epochs'] == 1

  # Evaluate the run's checkpoint from another workdir: the model is rebuilt from the checkpoint
  # alone, so the CLI's own (unrelated) model overrides do not matter.
  proc = _cli(
    '--config.mode=evaluate', f'--config.init.vit_dir={tmp_path / "run"}', workdir=tmp_path / 'eval'
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.loads((tmp_path / 'eval' / 'evaluate_results.json').read_text())
  assert evaluated['split'] == 'test' and evaluated['num_examples'] == 359
  assert evaluated['test_accuracy'] == pytest.approx(trained['test_accuracy'], abs=1e-9)
  assert evaluated['checkpoint_step'] == trained['best_step']
  assert (tmp_path / 'eval' / 'pruning_visualization.png').stat().st_size > 1000


def test_unknown_config_key_is_one_line(tmp_path):
  line = _error_line(_cli('--config.train.learning_rat=0.1', workdir=tmp_path))
  assert "unknown config key 'learning_rat'" in line


def test_unknown_mode_is_one_line(tmp_path):
  line = _error_line(_cli('--config.mode=fly', workdir=tmp_path))
  assert "--config.mode='fly': choose one of: train, evaluate" in line


def test_renamed_key_override_is_one_line_naming_the_new_key(tmp_path):
  line = _error_line(_cli('--config.eval.checkpoint_dir=runs/digits', workdir=tmp_path))
  assert line == (
    "error: config key 'eval.checkpoint_dir' is now 'init.vit_dir'; write --config.init.vit_dir=..."
  )


def test_out_of_range_value_is_one_line(tmp_path):
  line = _error_line(_cli('--config.prune.r_max=1.5', workdir=tmp_path))
  assert line == 'error: --config.prune.r_max=1.5: must be a number in [0.0, 1.0].'
  assert not (tmp_path / 'checkpoints').exists()


def test_evaluate_without_checkpoint_is_one_line(tmp_path):
  line = _error_line(_cli('--config.mode=evaluate', workdir=tmp_path))
  assert 'No checkpoint found' in line


@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_rerun_finishes(tmp_path):
  """The acceptance scenario: kill -9 once a checkpoint exists, rerun the same command, it resumes
  and ends."""
  workdir = tmp_path / 'run'
  args = [*TINY, '--config.train.num_epochs=10', '--config.train.checkpoint_every_steps=2']
  env = _env()
  cmd = [
    sys.executable,
    '-m',
    'vitprune_jax.main',
    '--config',
    'configs/digits_vit.py',
    '--workdir',
    str(workdir),
    *args,
  ]
  proc = subprocess.Popen(
    cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  ckpts = workdir / 'checkpoints'
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir()):
      break
    time.sleep(0.2)
  assert proc.poll() is None, 'the run ended before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / 'train_results.json').exists()

  rerun = _cli(*args, workdir=workdir)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  results = json.loads((workdir / 'train_results.json').read_text())
  assert results['resumed_from_step'] > 0 and results['steps'] == 10 * (1258 // 128)
