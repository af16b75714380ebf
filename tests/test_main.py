"""The command line as a user runs it: train, evaluate the checkpoint, and one-line errors."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.model.hidden_size=16', '--config.model.num_layers=1', '--config.model.num_heads=2',
        '--config.model.mlp_dim=32', '--config.train.batch_size=128', '--config.train.num_epochs=1']


def _cli(*args, workdir):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'vitprune_jax.main', '--config', 'configs/digits_vit.py',
                         '--workdir', str(workdir), *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


def _error_line(proc):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ')
  return last


def test_train_then_evaluate_from_the_cli(tmp_path):
  proc = _cli(*TINY, workdir=tmp_path / 'run')
  assert proc.returncode == 0, proc.stderr[-3000:]
  trained = json.loads((tmp_path / 'run' / 'train_results.json').read_text())
  assert trained['steps'] == 1258 // 128 and trained['epochs'] == 1

  # Evaluate the run's checkpoint from another workdir: the model is rebuilt from the checkpoint alone,
  # so the CLI's own (unrelated) model overrides do not matter.
  proc = _cli('--config.mode=evaluate', f'--config.eval.checkpoint_dir={tmp_path / "run"}',
              workdir=tmp_path / 'eval')
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.loads((tmp_path / 'eval' / 'evaluate_results.json').read_text())
  assert evaluated['split'] == 'test' and evaluated['num_examples'] == 359
  assert evaluated['test_accuracy'] == pytest.approx(trained['test_accuracy'], abs=1e-9)
  assert evaluated['checkpoint_step'] == trained['best_step']


def test_unknown_config_key_is_one_line(tmp_path):
  line = _error_line(_cli('--config.train.learning_rat=0.1', workdir=tmp_path))
  assert "unknown config key 'learning_rat'" in line


def test_unknown_mode_is_one_line(tmp_path):
  line = _error_line(_cli('--config.mode=fly', workdir=tmp_path))
  assert "Unknown mode 'fly'" in line and 'train' in line


def test_evaluate_without_checkpoint_is_one_line(tmp_path):
  line = _error_line(_cli('--config.mode=evaluate', workdir=tmp_path))
  assert 'No checkpoint found' in line


def test_sigkill_after_first_checkpoint_then_rerun_finishes(tmp_path):
  """The acceptance scenario: kill -9 once a checkpoint exists, rerun the same command, it resumes and ends."""
  workdir = tmp_path / 'run'
  args = [*TINY, '--config.train.num_epochs=30', '--config.train.checkpoint_every_steps=2']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
  cmd = [sys.executable, '-m', 'vitprune_jax.main', '--config', 'configs/digits_vit.py', '--workdir', str(workdir),
         *args]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
  assert results['resumed_from_step'] > 0 and results['steps'] == 30 * (1258 // 128)
