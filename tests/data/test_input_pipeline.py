"""Tests for the tf.data pipeline on digits, Fashion-MNIST and mocked TFDS (never downloads)."""

import collections
import dataclasses
import itertools
import math
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import helpers
from vitprune_jax import data
from vitprune_jax.data import offline
from vitprune_jax.errors import UserError

_DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
_IMAGENET_LOW = min((0 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
_IMAGENET_HIGH = max((1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))


def _batches(spec, split, **kwargs) -> list[dict[str, np.ndarray]]:
  return list(data.as_numpy(data.make_dataset(spec, split, **kwargs)))


def _stack(batches, key) -> np.ndarray:
  return np.concatenate([b[key] for b in batches])


def _assert_same(a, b) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in ('image', 'label', 'mask'):
      np.testing.assert_array_equal(x[key], y[key])


def _to_uint8(images: np.ndarray) -> np.ndarray:
  """Undoes 'minus_one_to_one' (exact for unresized images)."""
  return np.round((images + 1.0) * 127.5).astype(np.uint8)


def _check_batch(batch, batch_size, shape, num_classes) -> None:
  assert batch['image'].shape == (batch_size, *shape) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (batch_size,) and batch['label'].dtype == np.int32
  assert batch['mask'].shape == (batch_size,) and batch['mask'].dtype == np.float32
  assert batch['label'].min() >= 0 and batch['label'].max() < num_classes


_DIGITS = data.DataSpec(name='digits', image_size=8, augment='crop_flip')


@pytest.fixture
def fashion_spec(tiny_fashion_mnist):
  return data.DataSpec(
    name='fashion_mnist', fashion_mnist_dir=tiny_fashion_mnist[0], image_size=28, val_fraction=0.2
  )


@pytest.fixture
def two_processes(monkeypatch):
  """Pretends to be one of two JAX processes; returns a setter for this process's index."""
  index = [0]
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: index[0])
  return lambda i: index.__setitem__(0, i)


def test_spec_defaults_are_the_default_config():
  """Jobs can build the spec as DataSpec(**config.data, seed=config.seed); same values."""
  config = helpers.load_default_config()
  assert dataclasses.asdict(data.DataSpec()) == {**config.data.to_dict(), 'seed': config.seed}


def test_model_input_reads_no_data():
  spec = data.DataSpec(name='imagenet2012', image_size=224, data_dir='/nonexistent')
  assert data.model_input(spec) == (1000, (224, 224, 3))
  assert data.model_input(_DIGITS) == (10, (8, 8, 1))


def test_get_info_digits():
  info = data.get_info(_DIGITS)
  assert info == data.DatasetInfo(
    name='digits',
    num_classes=10,
    image_shape=(8, 8, 1),
    split_sizes={'train': 1258, 'validation': 180, 'test': 359},
  )
  assert sum(info.split_sizes.values()) == 1797


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_digits_eval_covers_split_in_order(split):
  batches = _batches(_DIGITS, split, global_batch_size=64, train=False)
  images, labels = offline.load(_DIGITS)[split]
  for b in batches:
    _check_batch(b, 64, (8, 8, 1), 10)
  mask = _stack(batches, 'mask')
  assert mask.sum() == len(labels) and len(batches) == -(-len(labels) // 64)
  real = mask == 1
  assert np.all(real[: len(labels)]) and not np.any(real[len(labels) :])
  np.testing.assert_array_equal(_stack(batches, 'label')[real], labels)
  np.testing.assert_array_equal(_to_uint8(_stack(batches, 'image')[real]), images)
  assert np.all(_stack(batches, 'image')[~real] == 0)


def test_digits_splits_partition_the_dataset():
  """Through the pipeline: each of the 1797 images lands in exactly one split."""
  seen = {}
  for split in ('train', 'validation', 'test'):
    batches = _batches(_DIGITS, split, global_batch_size=500, train=False)
    real = _stack(batches, 'mask') == 1
    images = _to_uint8(_stack(batches, 'image')[real])
    seen[split] = collections.Counter(x.tobytes() for x in images)
  raw, _ = offline._digits_raw()  # pylint: disable=protected-access
  assert sum(seen.values(), collections.Counter()) == collections.Counter(x.tobytes() for x in raw)
  assert not seen['train'].keys() & seen['validation'].keys()
  assert not seen['train'].keys() & seen['test'].keys()
  assert not seen['validation'].keys() & seen['test'].keys()


@pytest.mark.parametrize('augment', ['none', 'crop', 'crop_flip', 'inception_crop'])
def test_digits_train_batches(augment):
  spec = dataclasses.replace(_DIGITS, augment=augment)
  batches = _batches(spec, 'train', global_batch_size=100, train=True)
  assert len(batches) == 1258 // 100
  for b in batches:
    _check_batch(b, 100, (8, 8, 1), 10)
    assert np.all(b['mask'] == 1)
    assert b['image'].min() >= -1 and b['image'].max() <= 1
  train_images, _ = offline.load(spec)['train']
  raw = collections.Counter(x.tobytes() for x in train_images)
  epoch = collections.Counter(x.tobytes() for x in _to_uint8(_stack(batches, 'image')))
  if augment == 'none':
    assert sum(epoch.values()) == 1200 and not epoch - raw  # No example twice, none invented.
  else:
    assert sum((epoch - raw).values()) > 600  # Most examples really are augmented.


def test_digits_imagenet_normalization():
  spec = dataclasses.replace(_DIGITS, normalization='imagenet')
  images = _stack(_batches(spec, 'test', global_batch_size=400, train=False), 'image')
  assert images.min() >= _IMAGENET_LOW and images.max() <= _IMAGENET_HIGH
  assert images.min() < -1.5 and images.max() > 2  # Really standardised, not [-1, 1].


def test_digits_resized():
  spec = dataclasses.replace(_DIGITS, image_size=16)
  assert data.get_info(spec).image_shape == (16, 16, 1)
  for train in (True, False):
    batch = _batches(spec, 'validation', global_batch_size=32, train=train)[0]
    _check_batch(batch, 32, (16, 16, 1), 10)
    assert batch['image'].min() >= -1 and batch['image'].max() <= 1


def test_train_is_deterministic_per_seed_and_epoch():
  kwargs = dict(global_batch_size=128, train=True)
  first = _batches(_DIGITS, 'train', epoch=3, **kwargs)
  _assert_same(first, _batches(_DIGITS, 'train', epoch=3, **kwargs))
  other_epoch = _batches(_DIGITS, 'train', epoch=4, **kwargs)
  assert not np.array_equal(_stack(first, 'label'), _stack(other_epoch, 'label'))
  other_seed = _batches(dataclasses.replace(_DIGITS, seed=1), 'train', epoch=3, **kwargs)
  assert not np.array_equal(_stack(first, 'label'), _stack(other_seed, 'label'))


@pytest.mark.parametrize('augment', ['crop_flip', 'inception_crop'])
def test_skip_batches_resumes_exactly(augment):
  spec = dataclasses.replace(_DIGITS, augment=augment)
  kwargs = dict(global_batch_size=128, train=True, epoch=2)
  full = _batches(spec, 'train', **kwargs)
  assert len(full) == 9
  for skip in (1, 4, 9, 12):
    _assert_same(full[skip:], _batches(spec, 'train', skip_batches=skip, **kwargs))


def test_rand_augment_changes_images_only():
  kwargs = dict(global_batch_size=128, train=True, epoch=1)
  spec = dataclasses.replace(_DIGITS, rand_augment='rand-m9-mstd0.5-inc1')
  plain, augmented = _batches(_DIGITS, 'train', **kwargs), _batches(spec, 'train', **kwargs)
  np.testing.assert_array_equal(_stack(plain, 'label'), _stack(augmented, 'label'))
  same = np.all(_stack(plain, 'image') == _stack(augmented, 'image'), axis=(1, 2, 3))
  # Both layers skip with probability 0.25; auto-contrast is a no-op on digits (they span 0..255).
  assert 0.25 < same.mean() < 0.5
  for skip in (1, 5):
    _assert_same(augmented[skip:], _batches(spec, 'train', skip_batches=skip, **kwargs))
  evals = [_batches(s, 'test', global_batch_size=128, train=False) for s in (_DIGITS, spec)]
  _assert_same(*evals)  # Evaluation never augments.


def test_repeated_augment_repeats_each_image_in_its_batch():
  kwargs = dict(global_batch_size=120, train=True, epoch=2)
  spec = dataclasses.replace(_DIGITS, repeated_augment=3)
  plain, repeated = _batches(_DIGITS, 'train', **kwargs), _batches(spec, 'train', **kwargs)
  assert len(plain) == len(repeated) == 1258 // 120  # The epoch keeps its length.
  labels, images = _stack(repeated, 'label'), _stack(repeated, 'image')
  np.testing.assert_array_equal(labels, np.repeat(labels[::3], 3))  # Three in a row.
  copies = images.reshape(-1, 3, *images.shape[1:])
  for a, b in ((0, 1), (0, 2), (1, 2)):  # Each copy has its own crop and flip.
    assert np.mean([not np.array_equal(c[a], c[b]) for c in copies]) > 0.5
  for skip in (1, 4):
    _assert_same(repeated[skip:], _batches(spec, 'train', skip_batches=skip, **kwargs))


def test_repeated_augment_draws_its_third_from_the_whole_split():
  """With a shuffle buffer far smaller than the split, the epoch's images still come from all of it
  (a third taken after the buffer would be the first ~third of the split), and differ by epoch."""
  raw = offline.load(_DIGITS)['train'][0]
  spec = dataclasses.replace(_DIGITS, augment='none', repeated_augment=3, shuffle_buffer=16)
  kwargs = dict(global_batch_size=120, train=True)
  chosen = []
  for epoch in (0, 1):
    images = _to_uint8(_stack(_batches(spec, 'train', epoch=epoch, **kwargs), 'image'))
    index = {raw[i].tobytes(): i for i in range(len(raw))}
    picked = [index[image.tobytes()] for image in images[::3]]
    assert len(set(picked)) == len(picked) == 1200 // 3  # ceil(10 * 120 / 3) distinct images.
    assert min(picked) < 0.1 * len(raw) and max(picked) > 0.9 * len(raw)
    chosen.append(set(picked))
  assert len(chosen[0] & chosen[1]) < 0.5 * len(chosen[0])  # About a third in common.


def test_train_batches_resumes_across_epochs():
  """From step 13 with 9 steps an epoch: epoch 1 from its batch 4, then epochs 2, 3, ..."""
  kwargs = dict(global_batch_size=128, train=True)
  epochs = [_batches(_DIGITS, 'train', epoch=e, **kwargs) for e in range(3)]
  assert [len(e) for e in epochs] == [9, 9, 9]  # 1258 // 128.
  uninterrupted = epochs[0] + epochs[1] + epochs[2]

  def run(start_step, count):
    it = data.train_batches(
      _DIGITS, global_batch_size=128, start_step=start_step, steps_per_epoch=9
    )
    return list(itertools.islice(it, count))

  _assert_same(run(0, 27), uninterrupted)  # Forever: it runs on past the first epoch.
  _assert_same(run(13, 14), uninterrupted[13:])  # 5 from epoch 1, then all 9 of epoch 2.
  _assert_same(run(9, 9), epochs[1])  # Exactly at a boundary: a whole epoch, none skipped.
  assert not np.array_equal(epochs[0][4]['label'], epochs[1][4]['label'])  # Epochs differ.


def test_train_batches_rejects_bad_steps():
  with pytest.raises(ValueError, match='steps_per_epoch'):
    next(data.train_batches(_DIGITS, global_batch_size=8, start_step=0, steps_per_epoch=0))
  with pytest.raises(UserError, match='less than one batch of 2048') as e:
    next(data.train_batches(_DIGITS, global_batch_size=2048, start_step=0, steps_per_epoch=1))
  assert '\n' not in str(e.value)


def test_empty_eval_split():
  spec = dataclasses.replace(_DIGITS, val_fraction=0.0)
  assert data.get_info(spec).split_sizes['validation'] == 0
  with pytest.raises(UserError, match='validation split of digits is empty.*val_fraction') as e:
    data.make_dataset(spec, 'validation', global_batch_size=8, train=False)
  assert '\n' not in str(e.value)
  assert not _batches(spec, 'validation', global_batch_size=8, train=True)  # Train: no batch.


def test_two_processes_share_the_work(two_processes):
  labels = offline.load(_DIGITS)['test'][1]
  evals, trains = [], []
  for index in (0, 1):
    two_processes(index)
    evals.append(_batches(_DIGITS, 'test', global_batch_size=64, train=False))
    trains.append(_batches(_DIGITS, 'train', global_batch_size=64, train=True))
  assert len(evals[0]) == len(evals[1]) == math.ceil(math.ceil(len(labels) / 2) / 32)
  assert len(trains[0]) == len(trains[1]) == 1258 // 64
  for b in evals[0] + evals[1] + trains[0] + trains[1]:
    _check_batch(b, 32, (8, 8, 1), 10)
  eval_labels = [_stack(e, 'label')[_stack(e, 'mask') == 1] for e in evals]
  np.testing.assert_array_equal(eval_labels[0], labels[0::2])
  np.testing.assert_array_equal(eval_labels[1], labels[1::2])


def test_batch_must_split_over_processes(two_processes):
  del two_processes
  with pytest.raises(UserError, match='multiple of the 2 JAX processes'):
    data.make_dataset(_DIGITS, 'train', global_batch_size=63, train=True)


@pytest.mark.parametrize(
  'key, value, message',
  [
    ('name', 'mnist', r'unknown dataset .* \(--config\.data\.name\)'),
    ('augment', 'mixup', r'--config\.data\.augment'),
    ('normalization', 'zca', r'--config\.data\.normalization'),
    ('image_size', 1, r'--config\.data\.image_size'),
    ('rand_augment', 'rand-w0', r'--config\.data\.rand_augment'),
    ('repeated_augment', 0, r'--config\.data\.repeated_augment'),
  ],
)
def test_bad_spec(key, value, message):
  with pytest.raises(UserError, match=message) as e:
    data.make_dataset(
      dataclasses.replace(_DIGITS, **{key: value}), 'train', global_batch_size=8, train=True
    )
  assert '\n' not in str(e.value)


def test_unknown_dataset_and_split():
  with pytest.raises(UserError, match='valid: train, validation, test'):
    data.make_dataset(_DIGITS, 'val', global_batch_size=8, train=False)
  with pytest.raises(UserError, match='valid: digits, fashion_mnist, cifar10, imagenet2012'):
    data.get_info(dataclasses.replace(_DIGITS, name='mnist'))


def test_fashion_mnist_tiny_through_pipeline(fashion_spec, tiny_fashion_mnist):
  _, raw = tiny_fashion_mnist
  info = data.get_info(fashion_spec)
  assert info.split_sizes == {'train': 40, 'validation': 10, 'test': 20}
  assert info.image_shape == (28, 28, 1) and info.num_classes == 10
  batches = _batches(fashion_spec, 'test', global_batch_size=8, train=False)
  real = _stack(batches, 'mask') == 1
  assert real.sum() == 20 and len(batches) == 3
  np.testing.assert_array_equal(
    _to_uint8(_stack(batches, 'image')[real])[..., 0], raw['test_images']
  )
  np.testing.assert_array_equal(_stack(batches, 'label')[real], raw['test_labels'])
  seen = collections.Counter()
  for split in ('train', 'validation'):
    batches = _batches(fashion_spec, split, global_batch_size=8, train=False)
    real = _stack(batches, 'mask') == 1
    seen.update(x.tobytes() for x in _to_uint8(_stack(batches, 'image')[real])[..., 0])
  assert seen == collections.Counter(x.tobytes() for x in raw['train_images'])
  train = _batches(fashion_spec, 'train', global_batch_size=8, train=True, epoch=1)
  assert len(train) == 5
  _assert_same(
    train[2:],
    _batches(fashion_spec, 'train', global_batch_size=8, train=True, epoch=1, skip_batches=2),
  )


def test_fashion_mnist_real_files():
  if not os.path.isdir(_DEBIAN_FASHION_MNIST):
    pytest.skip(f'{_DEBIAN_FASHION_MNIST} missing: `apt-get install dataset-fashion-mnist`')
  spec = data.DataSpec(name='fashion_mnist', fashion_mnist_dir=_DEBIAN_FASHION_MNIST, image_size=28)
  info = data.get_info(spec)
  assert info.split_sizes == {'train': 54000, 'validation': 6000, 'test': 10000}
  assert sum(info.split_sizes.values()) == 70000
  batches = _batches(spec, 'test', global_batch_size=3000, train=False)
  real = _stack(batches, 'mask') == 1
  assert real.sum() == 10000 and len(batches) == 4
  labels = offline.read_idx(os.path.join(_DEBIAN_FASHION_MNIST, 't10k-labels-idx1-ubyte.gz'))
  np.testing.assert_array_equal(_stack(batches, 'label')[real], labels)
  spec = dataclasses.replace(spec, image_size=16)
  batch = next(data.as_numpy(data.make_dataset(spec, 'train', global_batch_size=256, train=True)))
  _check_batch(batch, 256, (16, 16, 1), 10)
  assert batch['image'].min() >= -1 and batch['image'].max() <= 1


def test_fashion_mnist_missing_everywhere(tmp_path):
  spec = data.DataSpec(
    name='fashion_mnist', fashion_mnist_dir=str(tmp_path), data_dir=str(tmp_path / 'tfds')
  )
  with pytest.raises(UserError, match='apt-get install dataset-fashion-mnist'):
    data.get_info(spec)


def test_unprepared_cifar10(tmp_path, no_network):
  spec = data.DataSpec(name='cifar10', data_dir=str(tmp_path / 'empty'))
  for call in (
    lambda: data.get_info(spec),
    lambda: data.make_dataset(spec, 'train', global_batch_size=8, train=True),
  ):
    with pytest.raises(UserError) as e:
      call()
    message = str(e.value)
    assert 'download_and_prepare' in message and str(tmp_path / 'empty') in message
    assert '--config.data.data_dir' in message and '\n' not in message
  assert not no_network
  assert not os.path.exists(tmp_path / 'empty' / 'downloads')


def test_unprepared_imagenet(tmp_path, no_network):
  spec = data.DataSpec(
    name='imagenet2012', data_dir=str(tmp_path / 'empty'), manual_dir=str(tmp_path / 'manual')
  )
  with pytest.raises(UserError) as e:
    data.get_info(spec)
  message = str(e.value)
  assert 'ILSVRC2012_img_train.tar' in message and 'ILSVRC2012_img_val.tar' in message
  assert str(tmp_path / 'manual') in message and '\n' not in message
  assert '--config.data.manual_dir' in message
  assert not no_network


def _mock_tfds(data_dir, num_examples):
  """TFDS's own offline mock; USE_FILES reads split sizes from `fake_prepared_tfds` metadata."""
  return tfds.testing.mock_data(
    num_examples=num_examples, data_dir=data_dir, policy=tfds.testing.MockPolicy.USE_FILES
  )


def test_cifar10_mocked(fake_prepared_tfds, no_network):
  data_dir = fake_prepared_tfds('cifar10', {'train': 100, 'test': 20})
  spec = data.DataSpec(name='cifar10', data_dir=data_dir, image_size=48, augment='crop_flip')
  with _mock_tfds(data_dir, num_examples=20):
    info = data.get_info(spec)
    assert info == data.DatasetInfo(
      name='cifar10',
      num_classes=10,
      image_shape=(48, 48, 3),
      split_sizes={'train': 98, 'validation': 2, 'test': 20},
    )
    raw = list(tfds.as_numpy(tfds.builder('cifar10', data_dir=data_dir).as_dataset(split='test')))
    batches = _batches(spec, 'test', global_batch_size=8, train=False)
    assert len(batches) == 3
    for b in batches:
      _check_batch(b, 8, (48, 48, 3), 10)
    real = _stack(batches, 'mask') == 1
    assert real.sum() == 20
    np.testing.assert_array_equal(_stack(batches, 'label')[real], [ex['label'] for ex in raw])
    for augment in ('crop_flip', 'inception_crop'):
      train_spec = dataclasses.replace(spec, augment=augment)
      # The mock serves 20 examples whatever the split, though metadata says 98: 2 batches.
      train = _batches(train_spec, 'train', global_batch_size=8, train=True, epoch=1)
      assert len(train) == 2
      for b in train:
        _check_batch(b, 8, (48, 48, 3), 10)
        assert b['image'].min() >= -1 and b['image'].max() <= 1 and np.all(b['mask'] == 1)
      _assert_same(train, _batches(train_spec, 'train', global_batch_size=8, train=True, epoch=1))
  assert not no_network


def test_imagenet2012_mocked(fake_prepared_tfds, no_network):
  data_dir = fake_prepared_tfds('imagenet2012', {'train': 200, 'validation': 10})
  spec = data.DataSpec(
    name='imagenet2012',
    data_dir=data_dir,
    image_size=64,
    normalization='imagenet',
    augment='inception_crop',
  )
  with _mock_tfds(data_dir, num_examples=10):
    info = data.get_info(spec)
    assert info.split_sizes == {'train': 198, 'validation': 2, 'test': 10}
    assert info.num_classes == 1000 and info.image_shape == (64, 64, 3)
    batches = _batches(spec, 'test', global_batch_size=4, train=False)
    assert len(batches) == 3 and _stack(batches, 'mask').sum() == 10
    for b in batches:
      _check_batch(b, 4, (64, 64, 3), 1000)
      assert b['image'].min() >= _IMAGENET_LOW and b['image'].max() <= _IMAGENET_HIGH
    for augment in ('inception_crop', 'crop_flip', 'none'):
      train_spec = dataclasses.replace(spec, augment=augment, rand_augment='rand-m9-mstd0.5-inc1')
      train = _batches(train_spec, 'train', global_batch_size=4, train=True)
      assert len(train) == 2
      for b in train:
        _check_batch(b, 4, (64, 64, 3), 1000)
  assert not no_network
