"""Tests for the offline datasets: the idx reader, the fixed splits and the error messages."""

import collections
import dataclasses
import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vitprune_jax.data import offline
from vitprune_jax.errors import UserError

_DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'


def _row_counts(*images: np.ndarray) -> collections.Counter:
  """Multiset of image hashes: equal counters mean the same images, duplicates included."""
  return collections.Counter(row.tobytes() for x in images for row in x)


def _check_partition(
  parts: dict[str, offline.Arrays], images: np.ndarray, labels: np.ndarray
) -> None:
  """`parts` split (images, labels) exactly: nothing lost, nothing duplicated, order kept."""
  assert _row_counts(*(x for x, _ in parts.values())) == _row_counts(images)
  keys = {s: {row.tobytes() for row in x} for s, (x, _) in parts.items()}
  unique_raw = len({row.tobytes() for row in images}) == len(images)
  if unique_raw:
    names = list(keys)
    for i, a in enumerate(names):
      for b in names[i + 1 :]:
        assert not keys[a] & keys[b], (a, b)
  index = {row.tobytes(): i for i, row in enumerate(images)}
  for x, y in parts.values():
    positions = [index[row.tobytes()] for row in x]
    if unique_raw:
      assert positions == sorted(positions)
      np.testing.assert_array_equal(y, labels[positions])


def test_read_idx_round_trip(tiny_fashion_mnist):
  directory, raw = tiny_fashion_mnist
  images = offline.read_idx(os.path.join(directory, 'train-images-idx3-ubyte.gz'))
  labels = offline.read_idx(os.path.join(directory, 'train-labels-idx1-ubyte.gz'))
  assert images.dtype == np.uint8 and images.shape == (50, 28, 28)
  np.testing.assert_array_equal(images, raw['train_images'])
  np.testing.assert_array_equal(labels, raw['train_labels'])


@pytest.mark.parametrize(
  'payload, message',
  [
    (b'\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02', 'header says'),  # 2 of 3 bytes.
    (b'\x00\x00\x08\x03\x00\x00', 'truncated'),
    (b'\x12\x34\x08\x01\x00\x00\x00\x01\x01', 'magic'),
  ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, payload, message):
  path = tmp_path / 'bad.gz'
  with gzip.open(path, 'wb') as f:
    f.write(payload)
  with pytest.raises(UserError, match=message):
    offline.read_idx(str(path))


def test_read_idx_big_endian_dtype(tmp_path):
  path = tmp_path / 'ints.gz'
  values = np.array([1, -2, 70000], '>i4')
  with gzip.open(path, 'wb') as f:
    f.write(bytes([0, 0, 0x0C, 1]) + np.array([3], '>u4').tobytes() + values.tobytes())
  np.testing.assert_array_equal(offline.read_idx(str(path)), [1, -2, 70000])


def test_fashion_mnist_tiny_splits(tiny_fashion_mnist):
  directory, raw = tiny_fashion_mnist
  parts = offline.load_fashion_mnist(directory, 0.2)
  assert {s: len(y) for s, (_, y) in parts.items()} == {'train': 40, 'validation': 10, 'test': 20}
  for x, y in parts.values():
    assert x.dtype == np.uint8 and x.shape[1:] == (28, 28, 1) and y.dtype == np.int64
  train_val = {s: parts[s] for s in ('train', 'validation')}
  _check_partition(train_val, raw['train_images'][..., None], raw['train_labels'])
  np.testing.assert_array_equal(parts['test'][0][..., 0], raw['test_images'])
  np.testing.assert_array_equal(parts['test'][1], raw['test_labels'])
  again = offline.load_fashion_mnist(directory, 0.2)
  for s in parts:
    np.testing.assert_array_equal(parts[s][1], again[s][1])


def test_fashion_mnist_real_files():
  if not os.path.isdir(_DEBIAN_FASHION_MNIST):
    pytest.skip(f'{_DEBIAN_FASHION_MNIST} missing: `apt-get install dataset-fashion-mnist`')
  parts = offline.load_fashion_mnist(_DEBIAN_FASHION_MNIST, 0.1)
  sizes = {s: len(y) for s, (_, y) in parts.items()}
  assert sizes == {'train': 54000, 'validation': 6000, 'test': 10000}
  assert sum(sizes.values()) == 70000
  raw_train = offline.read_idx(os.path.join(_DEBIAN_FASHION_MNIST, 'train-images-idx3-ubyte.gz'))
  train_val = [parts['train'][0], parts['validation'][0]]
  assert _row_counts(*train_val) == _row_counts(raw_train[..., None])
  assert set(np.unique(parts['test'][1])) == set(range(10))


def test_fashion_mnist_missing_files(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(UserError) as e:
    offline.load_fashion_mnist(str(empty), 0.1, data_dir=str(tmp_path / 'tfds'))
  message = str(e.value)
  assert 'apt-get install dataset-fashion-mnist' in message
  assert '--config.data.fashion_mnist_dir' in message and '\n' not in message


def test_fashion_mnist_falls_back_to_prepared_tfds(tmp_path, fake_prepared_tfds):
  data_dir = fake_prepared_tfds('fashion_mnist', {'train': 30, 'test': 30})
  with tfds.testing.mock_data(
    num_examples=30, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=data_dir
  ):
    parts = offline.load_fashion_mnist(str(tmp_path / 'no-idx-here'), 0.1, data_dir=data_dir)
  assert {s: len(y) for s, (_, y) in parts.items()} == {'train': 27, 'validation': 3, 'test': 30}
  assert parts['train'][0].shape[1:] == (28, 28, 1) and parts['train'][0].dtype == np.uint8


def test_digits_splits():
  parts = offline.load_digits(0.1, 0.2)
  sizes = {s: len(y) for s, (_, y) in parts.items()}
  assert sizes == {'test': 359, 'validation': 180, 'train': 1258}
  assert sum(sizes.values()) == 1797
  images = np.concatenate([x for x, _ in parts.values()])
  assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
  assert images.min() == 0 and images.max() == 255
  raw_images, raw_labels = offline._digits_raw()  # pylint: disable=protected-access
  _check_partition(parts, raw_images, raw_labels)


def test_digits_splits_are_fixed():
  """The split seed is a constant, so splits do not depend on anything but the fractions."""
  a, b = offline.load_digits(0.1, 0.2), offline.load_digits(0.1, 0.2)
  for s in a:
    np.testing.assert_array_equal(a[s][0], b[s][0])


@pytest.mark.parametrize('val, test', [(0.5, 0.5), (-0.1, 0.2), (0.1, 1.0)])
def test_digits_bad_fractions(val, test):
  with pytest.raises(UserError, match='fraction'):
    offline.load_digits(val, test)


def test_load_dispatches_on_spec(tiny_fashion_mnist):
  spec = offline.DataSpec(name='fashion_mnist', fashion_mnist_dir=tiny_fashion_mnist[0])
  assert len(offline.load(spec)['test'][1]) == 20
  assert len(offline.load(offline.DataSpec(name='digits'))['test'][1]) == 359
  with pytest.raises(UserError, match='offline'):
    offline.load(dataclasses.replace(spec, name='cifar10'))


def test_bad_fraction_names_the_config_key():
  with pytest.raises(UserError, match=r'^--config\.data\.val_fraction must be in \[0, 1\)'):
    offline.load(offline.DataSpec(val_fraction=1.5))
