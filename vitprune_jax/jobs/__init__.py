"""Jobs: one module per `config.mode`, each with `run(config, workdir)`.

Only jobs read the ConfigDict, write result files and print tables; everything they call takes
arrays and explicit hyper-parameters. Modules are imported on first use, so `--help` and a bad flag
answer before JAX and TensorFlow load.
"""

import importlib
from collections.abc import Callable
from typing import Any

import ml_collections

from vitprune_jax.errors import UserError
from vitprune_jax.jobs import config as config_lib

JOBS = {
  'train': 'vitprune_jax.jobs.train',
  'evaluate': 'vitprune_jax.jobs.evaluate',
  'sweep': 'vitprune_jax.jobs.sweep',
  'pareto': 'vitprune_jax.jobs.pareto',
  'train_policy': 'vitprune_jax.jobs.train_policy',
  'finetune': 'vitprune_jax.jobs.finetune',
  'import_weights': 'vitprune_jax.jobs.import_weights',
}


def get(mode: str) -> Callable[[ml_collections.ConfigDict, str], Any]:
  if mode not in JOBS:
    raise UserError(f'Unknown mode {mode!r}; choose one of: {", ".join(JOBS)}.')
  return importlib.import_module(JOBS[mode]).run


def run(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Checks `config` and runs the job named by `config.mode`: the CLI without the flag parsing."""
  config_lib.check(config)
  return get(config.mode)(config, workdir)
