"""Command line: `python -m vitprune_jax.main --config configs/<x>.py --workdir <dir>`, then any
`--config.<key>=<value>` overrides.

The config's `mode` picks the job (`vitprune_jax/jobs/`). This file only parses flags, checks the
config (`jobs/config.py`) and turns a `UserError` into one line on stderr and exit status 2.
"""

import importlib
import logging as pylogging
import os
import sys
import tempfile

# Before TensorFlow or JAX load: no TF C++ info lines, no oneDNN notice, and on a machine without an
# accelerator no probing of CUDA/TPU plugins (each prints a warning before the first useful line).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vitprune_jax import jobs  # noqa: E402
from vitprune_jax.errors import UserError  # noqa: E402
from vitprune_jax.jobs import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', None, 'Path to a config file (ml_collections get_config()).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_libraries() -> None:
  """Orbax logs every file it touches at INFO; keep its errors, drop the rest from our console."""
  logging.get_absl_handler().python_handler.addFilter(
    lambda r: r.levelno >= pylogging.ERROR or 'orbax' not in r.pathname
  )
  for name in ('jax._src.xla_bridge', 'jax._src.distributed'):
    pylogging.getLogger(name).setLevel(pylogging.ERROR)


def _import_quietly(module: str) -> None:
  """Imports `module` with file descriptor 2 held back, and shows what it printed only on failure.

  TensorFlow's C++ runtime probes for CUDA at import and prints its notices ("Could not find cuda
  drivers") before any log level applies; on a CPU machine that is noise before the first line.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      importlib.import_module(module)
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      sys.stderr.write(held.read().decode(errors='replace'))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def _renamed_override(argv: list[str]) -> str | None:
  """The one line for a `--config.<old key>=...` override of a renamed key, if any."""
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      key = arg[len('--config.') :].split('=', 1)[0]
      message = config_lib.renamed_message(key)
      if message:
        return message
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad config path, key or value ends in one line on stderr, not a
  traceback."""
  message = _renamed_override(argv)
  if message is None:
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
      lines = [line.strip('\'" ') for line in str(key).splitlines()]  # "Did you mean ...".
      hint = f' ({lines[1][0].lower()}{lines[1][1:]})' if len(lines) > 1 and lines[1] else ''
      message = (
        f'unknown config key {lines[0]!r}{hint} in a --config.<key> override; valid keys are '
        'in configs/default.py'
      )
    except OSError as e:
      lines = [line.strip() for line in str(e).splitlines() if line.strip()]
      message = f'could not load the config file: {lines[-1] if lines else e}'
    except UserError as e:
      message = str(e)
  print(f'error: {" ".join(message.split())[:500]}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  _quiet_libraries()
  try:
    config_lib.check(FLAGS.config)
    _import_quietly('tensorflow')
    job = jobs.get(FLAGS.config.mode)
    import jax  # noqa: PLC0415  (after the checks: a bad flag answers before JAX loads)

    from vitprune_jax import parallel  # noqa: PLC0415

    d = FLAGS.config.distributed
    # Before any other JAX use: it fixes the device set.
    parallel.maybe_initialize_distributed(
      d.initialize, d.coordinator_address, d.num_processes, d.process_id
    )
    logging.info(
      'JAX devices: %d local, %d global; process %d of %d.',
      jax.local_device_count(),
      jax.device_count(),
      jax.process_index(),
      jax.process_count(),
    )
    job(FLAGS.config, FLAGS.workdir)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
