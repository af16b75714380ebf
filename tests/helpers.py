"""Helpers shared by the tests: the default config, a tiny digits configuration, a free port, and
the programs of `tests/scripts/` run as fresh processes (only where a test needs several JAX
processes; the rest runs in the pytest process, on the 8 CPU devices of tests/conftest.py)."""

import contextlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
from collections.abc import Sequence
from unittest import mock

import jax
import ml_collections

from configs import default
from vitprune_jax import parallel

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = REPO / 'tests' / 'scripts'
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
# What a launch sets to join processes; a script must not inherit them from the caller's shell.
_LAUNCH_VARS = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')


def load_default_config() -> ml_collections.ConfigDict:
  """configs/default.py's config, references resolved, unlocked for a test to change."""
  config = default.get_config().copy_and_resolve_references()
  config.unlock()
  return config


def tiny_config(config: ml_collections.ConfigDict, epochs: int = 2) -> ml_collections.ConfigDict:
  """A 1-layer, 16-wide ViT on digits: 9 steps an epoch, a few seconds a run."""
  config.data.name = 'digits'
  config.data.image_size = 8
  config.model.variant = 'digits'
  config.model.hidden_size = 16
  config.model.num_layers = 1
  config.model.num_heads = 2
  config.model.mlp_dim = 32
  config.train.batch_size = 128
  config.train.num_epochs = epochs
  config.train.learning_rate = 3e-3
  config.train.log_every_steps = 4
  config.train.checkpoint_every_steps = 3
  config.eval.batch_size = 256
  return config


@contextlib.contextmanager
def fast_compile():
  """XLA skips most optimisation passes while inside: plumbing tests of tiny models compile in about
  half the time (flax's examples/imagenet/train_test.py does the same). Numbers may differ from an
  optimised build in the last bits, so compare only runs made inside with each other. A script gets
  the same with `JAX_DISABLE_MOST_OPTIMIZATIONS=1` in its environment."""
  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', before)


@contextlib.contextmanager
def default_mesh(devices: Sequence[jax.Device]):
  """Inside, `parallel.make_mesh()` (how every job picks its devices) spans `devices`, not all 8.

  A job of a tiny model then runs as on a 1-device machine: 2.5 times less CPU than over 8
  simulated devices (the tiny 3-epoch digits run: 24 s -> 10 s).
  """
  make_mesh = parallel.make_mesh
  subset = lambda d=None: make_mesh(devices if d is None else d)
  with mock.patch.object(parallel, 'make_mesh', subset):
    yield


def free_port() -> int:
  """A TCP port free right now on localhost, for a multi-process test's JAX coordinator."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def script_env(devices: int, **extra: str) -> dict[str, str]:
  """The environment of a script: CPU only, `devices` simulated devices, the repo importable.

  Other XLA flags of the caller are kept; the device count and any launch variables are not.
  """
  env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
  flags = re.sub(rf'{DEVICE_COUNT_FLAG}=\S*', '', env.get('XLA_FLAGS', '')).split()
  return dict(
    env,
    XLA_FLAGS=' '.join([*flags, f'{DEVICE_COUNT_FLAG}={devices}']),
    JAX_PLATFORMS='cpu',
    PYTHONPATH=str(REPO),
    TF_CPP_MIN_LOG_LEVEL='3',
    **extra,
  )


def start_script(name: str, *args: str, devices: int, **env: str) -> subprocess.Popen:
  """Starts `python tests/scripts/<name>.py args...` in the repo (see `script_env`)."""
  return subprocess.Popen(
    [sys.executable, str(SCRIPTS / f'{name}.py'), *args],
    cwd=REPO,
    env=script_env(devices, **env),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[str]:
  """The stdout of each process once all have exited 0; kills them all if one hangs or fails."""
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}:\n{err[-3000:]}'
  return [out for out, _ in outs]


def last_json(out: str) -> dict:
  """The JSON object a script prints on its last line (libraries may print before it)."""
  return json.loads(out.strip().splitlines()[-1])
