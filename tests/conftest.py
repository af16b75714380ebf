"""Shared pytest fixtures."""
import gzip
import importlib.util
import pathlib
from typing import Callable

import ml_collections
import numpy as np
import pytest

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'default.py'


def _load_default_config_module():
  """configs/ is not a package, so load default.py by path (as config_flags would)."""
  spec = importlib.util.spec_from_file_location('vitprune_default_config', _DEFAULT_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def base_config() -> ml_collections.ConfigDict:
  """A fresh, unlocked copy of configs/default.py's config for one test to modify."""
  config = _load_default_config_module().get_config().copy_and_resolve_references()
  config.unlock()
  return config


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
  for key, filename in [('train_images', 'train-images-idx3-ubyte.gz'),
                        ('train_labels', 'train-labels-idx1-ubyte.gz'),
                        ('test_images', 't10k-images-idx3-ubyte.gz'),
                        ('test_labels', 't10k-labels-idx1-ubyte.gz')]:
    _write_idx_gz(directory / filename, raw[key])
  return str(directory), raw


@pytest.fixture
def fake_prepared_tfds(tmp_path) -> Callable[[str, dict[str, int]], str]:
  """Writes only a TFDS dataset's metadata, so `builder.is_prepared()` is true without its data.

  Pair it with `tfds.testing.mock_data(policy=MockPolicy.USE_FILES, data_dir=...)`, which serves
  random examples and takes split sizes from this metadata. Returns the data_dir.
  """
  # Imported here: it is slow, and most tests never need it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def make(name: str, split_sizes: dict[str, int]) -> str:
    data_dir = tmp_path / 'tfds'
    builder = tfds.builder(name, data_dir=str(data_dir))
    splits = [
        tfds.core.SplitInfo(
            name=split, shard_lengths=[n], num_bytes=0,
            filename_template=tfds.core.ShardedFileTemplate(
                data_dir=builder.data_path, dataset_name=builder.name, split=split,
                template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
                filetype_suffix='tfrecord'))
        for split, n in split_sizes.items()
    ]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
    return str(data_dir)

  return make
