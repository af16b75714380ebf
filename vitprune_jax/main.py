"""Command line: `python -m vitprune_jax.main --config configs/<x>.py --workdir <dir> [--config.<key>=<value>]`.

The config's `mode` picks the job. Every job is an importable function `(config, workdir) -> results`;
this file only parses flags and turns a `UserError` into one line on stderr and exit status 2.
"""
import importlib
import logging as pylogging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from vitprune_jax.errors import UserError

# mode -> 'module:function'; imported lazily so `--help` and bad flags answer fast.
MODES = {
    'train': 'vitprune_jax.training.train:train_and_evaluate',
    'evaluate': 'vitprune_jax.evaluation.compare:evaluate',
    'sweep': 'vitprune_jax.evaluation.sweep:sweep',
    'train_policy': 'vitprune_jax.rl.train_policy:train_policy',
    'finetune': 'vitprune_jax.rl.finetune:finetune',
    'import_weights': 'vitprune_jax.models.pretrained:import_weights',
}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (ml_collections get_config()).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def run(config, workdir: str):
  """Runs the job named by `config.mode`; importable so tests and notebooks skip the flag parsing."""
  if config.mode not in MODES:
    raise UserError(f'Unknown mode {config.mode!r}; choose one of: {", ".join(MODES)}.')
  module_name, fn_name = MODES[config.mode].split(':')
  return getattr(importlib.import_module(module_name), fn_name)(config, workdir)


def _quiet_libraries() -> None:
  """Orbax logs every file it touches at INFO; keep its errors, drop the rest from our console."""
  logging.get_absl_handler().python_handler.addFilter(
      lambda r: r.levelno >= pylogging.ERROR or 'orbax' not in r.pathname)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, but a bad config path, key or value ends in one line on stderr, not a traceback."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.mode  # config_flags defers load errors to the first access.
    return rest
  except flags.Error as e:
    message = str(e)
  except (KeyError, AttributeError) as e:
    key = e
    while isinstance(key, BaseException) and key.args:  # AttributeError(KeyError("'name'")).
      key = key.args[0]
    lines = [line.strip('\'" ') for line in str(key).splitlines()]  # ml_collections adds "Did you mean ...".
    hint = f' ({lines[1][0].lower()}{lines[1][1:]})' if len(lines) > 1 and lines[1] else ''
    message = (f'unknown config key {lines[0]!r}{hint} in a --config.<key> override; valid keys are in '
               'configs/default.py')
  except OSError as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = f'could not load the config file: {lines[-1] if lines else e}'
  print(f'error: {" ".join(message.split())[:500]}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  _quiet_libraries()
  import jax  # pylint: disable=g-import-not-at-top
  from vitprune_jax import parallel  # pylint: disable=g-import-not-at-top
  try:
    parallel.maybe_initialize_distributed(FLAGS.config)  # Before any other JAX use: it fixes the device set.
    logging.info('JAX devices: %d local, %d global; process %d of %d.', jax.local_device_count(),
                 jax.device_count(), jax.process_index(), jax.process_count())
    run(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
