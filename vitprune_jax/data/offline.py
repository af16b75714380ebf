"""The two datasets that need no download (sklearn digits, Debian's Fashion-MNIST) as numpy arrays.

Splits come from a permutation with a fixed seed (not DataSpec.seed), so they never change between
runs or experiments. Every loader returns {logical split: (images uint8 [N, H, W, C], labels int64
[N])}; within a split, examples keep their raw order.

`DataSpec`, the description of a dataset that the whole data layer reads, lives here because this
is the module every other one in the layer imports.
"""

import dataclasses
import functools
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds
from sklearn import datasets as sk_datasets

from vitprune_jax.errors import UserError

DATASETS = ('digits', 'fashion_mnist')
SPLIT_SEED = 12345
FASHION_MNIST_FILES = {
  'train_images': 'train-images-idx3-ubyte.gz',
  'train_labels': 'train-labels-idx1-ubyte.gz',
  'test_images': 't10k-images-idx3-ubyte.gz',
  'test_labels': 't10k-labels-idx1-ubyte.gz',
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}

Arrays = tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Everything the input pipeline reads; the defaults are configs/default.py's `data` section.

  Jobs build it from `config.data` and `config.seed`. Values are checked where they are used, with
  one-line errors that name the `--config.data.<key>` to change.
  """

  name: str = 'digits'  # digits | fashion_mnist | cifar10 | imagenet2012.
  image_size: int = 8  # Side in pixels of the (square) image fed to the model.
  augment: str = 'crop'  # Training augmentation: none | crop | crop_flip | inception_crop.
  normalization: str = 'minus_one_to_one'  # Pixel scaling: minus_one_to_one | imagenet.
  val_fraction: float = 0.1  # Offline datasets: share of train held out for validation.
  test_fraction: float = 0.2  # digits only (it has no official test split): share for test.
  shuffle_buffer: int = 50_000  # Examples in the training shuffle buffer.
  prefetch: int = 2  # Batches tf.data prepares ahead.
  data_dir: str = ''  # TFDS data_dir ('' = TFDS default).
  manual_dir: str = ''  # TFDS manual_dir (ImageNet tarballs).
  fashion_mnist_dir: str = '/usr/share/datasets/fashion-mnist'  # Debian's idx files.
  rand_augment: str = ''  # timm's RandAugment string (DeiT: 'rand-m9-mstd0.5-inc1'); '' = off.
  repeated_augment: int = 1  # Copies of each image per epoch, each augmented anew (DeiT: 3).
  # On-device batch augmentation, applied in the train step (`training.augment`), not by tf.data.
  mixup_alpha: float = 0.0  # Beta(a, a) of mixup; 0 = off.
  cutmix_alpha: float = 0.0  # Beta(a, a) of cutmix; 0 = off.
  mixup_switch_prob: float = 0.5  # Both on: the chance a batch gets cutmix, not mixup.
  mixup_prob: float = 1.0  # The chance a batch is mixed at all.
  random_erasing: float = 0.0  # Per-image chance of random erasing.
  seed: int = 0  # Data order and augmentation (the splits use SPLIT_SEED instead).


def load(spec: DataSpec) -> dict[str, Arrays]:
  """Loads the offline dataset `spec.name` with its train/validation/test splits."""
  if spec.name == 'digits':
    return load_digits(spec.val_fraction, spec.test_fraction)
  if spec.name == 'fashion_mnist':
    return load_fashion_mnist(spec.fashion_mnist_dir, spec.val_fraction, data_dir=spec.data_dir)
  raise UserError(f'{spec.name!r} is not an offline dataset; offline ones: {", ".join(DATASETS)}')


def num_held_out(n: int, fraction: float) -> int:
  """Examples a `fraction` of `n` stands for (rounded, so 0.1 of 1797 is 180)."""
  return int(round(n * fraction))


def load_digits(val_fraction: float, test_fraction: float) -> dict[str, Arrays]:
  """sklearn's 1,797 8x8 digits (0..16 scaled to 0..255); it has no test split, so we cut one."""
  _check_fraction('val_fraction', val_fraction)
  _check_fraction('test_fraction', test_fraction)
  if val_fraction + test_fraction >= 1:
    raise UserError(
      f'digits: --config.data.val_fraction + test_fraction must be < 1, got '
      f'{val_fraction} + {test_fraction}'
    )
  images, labels = _digits_raw()
  n = len(labels)
  n_test, n_val = num_held_out(n, test_fraction), num_held_out(n, val_fraction)
  perm = np.random.default_rng(SPLIT_SEED).permutation(n)
  parts = {
    'test': perm[:n_test],
    'validation': perm[n_test : n_test + n_val],
    'train': perm[n_test + n_val :],
  }
  return {s: _take(images, labels, idx) for s, idx in parts.items()}


def load_fashion_mnist(
  directory: str, val_fraction: float, *, data_dir: str = ''
) -> dict[str, Arrays]:
  """Fashion-MNIST from the idx files in `directory`, else from an already prepared TFDS copy.

  validation is a fixed random `val_fraction` of the 60k train images, test is the 10k t10k set.
  """
  _check_fraction('val_fraction', val_fraction)
  missing = [
    f for f in FASHION_MNIST_FILES.values() if not os.path.isfile(os.path.join(directory, f))
  ]
  if not missing:
    raw = _read_fashion_idx(directory)
  else:
    raw = _fashion_mnist_from_tfds(data_dir)
    if raw is None:
      raise UserError(
        f'fashion_mnist: {", ".join(missing)} not found in {directory!r} and no prepared TFDS '
        f'copy in {data_dir or "the default TFDS data_dir"}: run `apt-get install '
        'dataset-fashion-mnist` or set --config.data.fashion_mnist_dir'
      )
  train_images, train_labels, test_images, test_labels = raw
  n = len(train_labels)
  perm = np.random.default_rng(SPLIT_SEED).permutation(n)
  n_train = n - num_held_out(n, val_fraction)
  return {
    'train': _take(train_images, train_labels, perm[:n_train]),
    'validation': _take(train_images, train_labels, perm[n_train:]),
    'test': (test_images, test_labels),
  }


def read_idx(path: str) -> np.ndarray:
  """Reads one gzip'd idx file (MNIST format: 0, 0, dtype code, ndim, big-endian uint32 dims)."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise UserError(f'{path}: not an idx file (bad magic number {data[:4].hex()})')
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise UserError(f'{path}: truncated idx header')
  shape = tuple(int(x) for x in np.frombuffer(data, '>u4', count=ndim, offset=4))
  dtype = np.dtype(_IDX_DTYPES[data[2]])
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(data) - header != expected:
    raise UserError(
      f'{path}: idx header says {shape} ({expected} bytes) but the file holds '
      f'{len(data) - header} bytes of data'
    )
  return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder('='))


@functools.lru_cache(maxsize=1)
def _digits_raw() -> Arrays:
  """Cached because sklearn re-parses its csv on every call."""
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return _read_only(images), _read_only(digits.target.astype(np.int64))


@functools.lru_cache(maxsize=2)
def _read_fashion_idx(directory: str) -> tuple[np.ndarray, ...]:
  """Cached: decompressing the 60k images takes most of a second."""
  arrays = {k: read_idx(os.path.join(directory, f)) for k, f in FASHION_MNIST_FILES.items()}
  out = []
  for part in ('train', 'test'):
    images, labels = arrays[f'{part}_images'], arrays[f'{part}_labels']
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise UserError(
        f'fashion_mnist in {directory}: {part} images {images.shape} do not match '
        f'labels {labels.shape}'
      )
    out += [_read_only(images.astype(np.uint8)[..., None]), _read_only(labels.astype(np.int64))]
  return tuple(out)


def _fashion_mnist_from_tfds(data_dir: str) -> tuple[np.ndarray, ...] | None:
  """The TFDS copy as arrays, or None when it is not prepared (never downloads)."""
  builder = tfds.builder('fashion_mnist', data_dir=data_dir or None)
  if not builder.is_prepared():
    return None
  out = []
  for split in ('train', 'test'):
    ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    out += [np.asarray(ex['image'], np.uint8), np.asarray(ex['label'], np.int64)]
  return tuple(out)


def _take(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> Arrays:
  """Sorted so each split keeps the raw order (eval output then lines up with the raw data)."""
  idx = np.sort(idx)
  return images[idx], labels[idx]


def _read_only(x: np.ndarray) -> np.ndarray:
  """Cached arrays are shared between callers, so nobody may write to them."""
  x.setflags(write=False)
  return x


def _check_fraction(key: str, value: float) -> None:
  if not 0 <= value < 1:
    raise UserError(f'--config.data.{key} must be in [0, 1), got {value}')
