"""Shared pytest fixtures."""
import gzip
import pathlib
from typing import Callable

import ml_collections
import numpy as np
import pytest

from tests import helpers



@pytest.fixture
def base_config() -> ml_collections.ConfigDict:
  """A fresh, unlocked copy of configs/default.py's config for one test to modify."""
  return helpers.load_default_config()


@pytest.fixture(scope='session')
def tiny_trained_run(tmp_path_factory) -> tuple[ml_collections.ConfigDict, str]:
  """A 2-layer digits ViT trained for 3 epochs (seconds), shared by every test that needs a real checkpoint."""
  from vitprune_jax.training import train  # pylint: disable=g-import-not-at-top
  config = helpers.tiny_config(helpers.load_default_config(), epochs=3)
  config.model.num_layers = 2
  workdir = str(tmp_path_factory.mktemp('tiny_trained_run'))
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
