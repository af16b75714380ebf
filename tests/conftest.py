"""Shared pytest fixtures, and the devices every test process sees.

Every test process (each pytest-xdist worker too) has 8 simulated CPU devices, set here once, before
anything imports JAX: 1-vs-8-device comparisons run in one process, on meshes over device subsets
(`parallel.make_mesh(jax.devices()[:1])`). Subprocesses inherit the 8 devices; a program in
`tests/scripts/` states its own count (`helpers.script_env`).
"""

import os
import socket
import sys

DEVICE_COUNT = 8
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), f'--xla_force_host_platform_device_count={DEVICE_COUNT}']
  ).strip()
os.environ['JAX_PLATFORMS'] = 'cpu'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # As vitprune_jax/main.py: the CLI's numbers.
if 'jax' in sys.modules:  # A plugin imported JAX first: it read JAX_PLATFORMS already.
  sys.modules['jax'].config.update('jax_platforms', 'cpu')

import gzip  # noqa: E402
import pathlib  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture
def base_config() -> ml_collections.ConfigDict:
  """A fresh, unlocked copy of configs/default.py's config for one test to modify."""
  return helpers.load_default_config()


@pytest.fixture
def fast_compile():
  """The test compiles with most XLA optimisations off (`helpers.fast_compile`); for plumbing tests
  of tiny models: `@pytest.mark.usefixtures('fast_compile')`."""
  with helpers.fast_compile():
    yield


@pytest.fixture
def one_device_jobs():
  """Jobs run in the test (`jobs.run`, `train_and_evaluate`...) use 1 device, not all 8
  (`helpers.default_mesh`): much faster for tiny models. `@pytest.mark.usefixtures(...)`."""
  with helpers.default_mesh(jax.devices()[:1]):
    yield


@pytest.fixture(scope='session')
def tiny_trained_run(tmp_path_factory) -> tuple[ml_collections.ConfigDict, str]:
  """A 2-layer digits ViT trained 3 epochs (seconds), for every test that needs a real checkpoint.

  Once per test process (so once per xdist worker that runs such a test), on one device.
  """
  from vitprune_jax.jobs import train  # noqa: PLC0415  (TensorFlow: only for the tests that use it)

  config = helpers.tiny_config(helpers.load_default_config(), epochs=3)
  config.model.num_layers = 2
  workdir = str(tmp_path_factory.mktemp('tiny_trained_run'))
  with helpers.default_mesh(jax.devices()[:1]):
    train.train_and_evaluate(config, workdir)
  return config, workdir


def _write_idx_gz(path: pathlib.Path, array: np.ndarray) -> None:
  """The MNIST idx format: 0, 0, dtype 0x08 (uint8), ndim, big-endian uint32 dims, data."""
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion_mnist(tmp_path) -> tuple[str, dict[str, np.ndarray]]:
  """Fashion-MNIST-format idx files (50 train, 20 test), so no test needs the Debian package.

  Returns the directory and the raw arrays written there.
  """
  rng = np.random.default_rng(0)
  raw = {
    'train_images': rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
    'train_labels': rng.integers(0, 10, 50, dtype=np.uint8),
    'test_images': rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
    'test_labels': rng.integers(0, 10, 20, dtype=np.uint8),
  }
  directory = tmp_path / 'fashion-mnist'
  directory.mkdir()
  for key, filename in [
    ('train_images', 'train-images-idx3-ubyte.gz'),
    ('train_labels', 'train-labels-idx1-ubyte.gz'),
    ('test_images', 't10k-images-idx3-ubyte.gz'),
    ('test_labels', 't10k-labels-idx1-ubyte.gz'),
  ]:
    _write_idx_gz(directory / filename, raw[key])
  return str(directory), raw


@pytest.fixture
def fake_prepared_tfds(tmp_path) -> Callable[[str, dict[str, int]], str]:
  """Writes only a TFDS dataset's metadata, so `builder.is_prepared()` is true without its data.

  Pair it with `tfds.testing.mock_data(policy=MockPolicy.USE_FILES, data_dir=...)`, which serves
  random examples and takes split sizes from this metadata. Returns the data_dir.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415  (slow; most tests never need it)

  def make(name: str, split_sizes: dict[str, int]) -> str:
    data_dir = tmp_path / 'tfds'
    builder = tfds.builder(name, data_dir=str(data_dir))
    splits = [
      tfds.core.SplitInfo(
        name=split,
        shard_lengths=[n],
        num_bytes=0,
        filename_template=tfds.core.ShardedFileTemplate(
          data_dir=builder.data_path,
          dataset_name=builder.name,
          split=split,
          template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
          filetype_suffix='tfrecord',
        ),
      )
      for split, n in split_sizes.items()
    ]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
    return str(data_dir)

  return make


@pytest.fixture
def no_network(monkeypatch):
  """Records (and refuses) every attempt to open a connection."""
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append((args, kwargs))
    raise OSError('network disabled in tests')

  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)
  return attempts
