"""tf.data input pipeline shared by the offline (numpy) and TFDS datasets.

Every batch is a pure function of (spec, split, epoch, batch index): the shuffle seed comes from
(spec.seed, epoch) and each example's augmentation from stateless ops seeded with (spec.seed,
epoch, process, example index). That is what lets a run resume mid-epoch with `skip_batches`
(`train_batches` does it from a global step) and see exactly the batches an uninterrupted run
would have seen.
"""

import dataclasses
import math
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vitprune_jax.data import offline, rand_augment
from vitprune_jax.data.offline import DataSpec
from vitprune_jax.errors import UserError

try:
  tf.config.set_visible_devices([], 'GPU')  # JAX owns the accelerators; TF only feeds them.
except RuntimeError:
  pass  # TF already initialised its devices elsewhere; it is too late to hide them.

SPLITS = ('train', 'validation', 'test')
DATASETS = ('digits', 'fashion_mnist', 'cifar10', 'imagenet2012')
AUGMENTS = ('none', 'crop', 'crop_flip', 'inception_crop')
NORMALIZATIONS = ('minus_one_to_one', 'imagenet')

_NUM_CLASSES = {'digits': 10, 'fashion_mnist': 10, 'cifar10': 10, 'imagenet2012': 1000}
_CHANNELS = {'digits': 1, 'fashion_mnist': 1, 'cifar10': 3, 'imagenet2012': 3}
_TFDS_SPLITS = {
  'cifar10': {'train': 'train[:98%]', 'validation': 'train[98%:]', 'test': 'test'},
  'imagenet2012': {'train': 'train[:99%]', 'validation': 'train[99%:]', 'test': 'validation'},
}
# Kept as JPEG bytes until after the shuffle buffer, and cropped while decoding (inception crop).
_JPEG_DATASETS = ('imagenet2012',)
_EVAL_CROP_FRACTION = 0.875  # imagenet eval: resize the short side to size / 0.875, center crop.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# What makes an offline split empty (the TFDS splits are fixed).
_EMPTY_SPLIT_HINTS = {
  ('digits', 'validation'): ': raise --config.data.val_fraction',
  ('digits', 'test'): ': raise --config.data.test_fraction',
  ('fashion_mnist', 'validation'): ': raise --config.data.val_fraction',
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) the model sees, after preprocessing.
  split_sizes: dict[str, int]  # Logical split -> examples, global over all processes.


def model_input(spec: DataSpec) -> tuple[int, tuple[int, int, int]]:
  """(num_classes, image shape) of `spec` without reading any data: all a model needs."""
  name = _check_name(spec)
  size = spec.image_size
  return _NUM_CLASSES[name], (size, size, _CHANNELS[name])


def get_info(spec: DataSpec) -> DatasetInfo:
  """Static facts about `spec`'s dataset (sizes need the data, but no pipeline is built)."""
  name = _check_name(spec)
  if name in offline.DATASETS:
    sizes = {s: len(labels) for s, (_, labels) in offline.load(spec).items()}
  else:
    builder = _tfds_builder(spec)
    sizes = {s: builder.info.splits[t].num_examples for s, t in _TFDS_SPLITS[name].items()}
  num_classes, image_shape = model_input(spec)
  return DatasetInfo(
    name=name,
    num_classes=num_classes,
    image_shape=image_shape,
    split_sizes={s: sizes[s] for s in SPLITS},
  )


def make_dataset(
  spec: DataSpec,
  split: str,
  *,
  global_batch_size: int,
  train: bool,
  epoch: int = 0,
  skip_batches: int = 0,
) -> tf.data.Dataset:
  """This process's batches of one pass over `split`.

  Args:
    spec: the dataset and its preprocessing.
    split: 'train', 'validation' or 'test'.
    global_batch_size: examples per step over all processes (a multiple of their number).
    train: shuffle and augment (seeded by spec.seed and `epoch`), dropping the incomplete last
      batch; else every example once in order, the last batch padded with zero images, mask 0.
    epoch: which epoch's shuffle and augmentation (train only).
    skip_batches: batches of that epoch to skip, to resume mid-epoch (train only).

  Returns:
    Elements {'image': float32 [b, H, W, C], 'label': int32 [b], 'mask': float32 [b]} with
    b = global_batch_size // jax.process_count(); every process yields the same number of
    batches. Raises UserError when an eval pass would yield no batch (an empty split).
  """
  name = _check_name(spec)
  if split not in SPLITS:
    raise UserError(f'unknown split {split!r} for dataset {name}; valid: {", ".join(SPLITS)}')
  _check_preprocessing(spec)
  process_index, process_count = jax.process_index(), jax.process_count()
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise UserError(
      f'batch size {global_batch_size} must be a positive multiple of the '
      f'{process_count} JAX processes'
    )
  if epoch < 0 or skip_batches < 0:
    raise ValueError(f'epoch ({epoch}) and skip_batches ({skip_batches}) must be >= 0')
  batch = global_batch_size // process_count
  ds, num_examples = _examples(spec, split, process_index, process_count)
  if train:
    ds = _train_batches(
      ds, spec, num_examples, batch, global_batch_size, epoch, skip_batches, process_index
    )
  else:
    if not num_examples:
      raise UserError(
        f'the {split} split of {name} is empty, so there is nothing to evaluate'
        f'{_EMPTY_SPLIT_HINTS.get((name, split), "")}'
      )
    ds = _eval_batches(ds, spec, num_examples, batch, process_count)
  return ds.prefetch(spec.prefetch)


def train_batches(
  spec: DataSpec, *, global_batch_size: int, start_step: int, steps_per_epoch: int
) -> Iterator[dict[str, np.ndarray]]:
  """This process's training batches from global step `start_step` on, epoch after epoch, forever.

  Exactly the batches an uninterrupted run from step 0 sees from that step on: epoch
  `start_step // steps_per_epoch` from batch `start_step % steps_per_epoch`, then whole epochs.

  Args:
    spec: the dataset and its preprocessing.
    global_batch_size: examples per step over all processes.
    start_step: the global step (batches consumed so far) to resume from.
    steps_per_epoch: batches per epoch the caller counts steps with (normally
      get_info(spec).split_sizes['train'] // global_batch_size).

  Yields:
    {'image', 'label', 'mask'} numpy batches, as `make_dataset(..., train=True)` makes them.
  """
  if steps_per_epoch <= 0 or start_step < 0:
    raise ValueError(
      f'steps_per_epoch ({steps_per_epoch}) must be > 0 and start_step ({start_step}) >= 0'
    )
  epoch, skip = divmod(start_step, steps_per_epoch)
  while True:
    ds = make_dataset(
      spec, 'train', global_batch_size=global_batch_size, train=True, epoch=epoch, skip_batches=skip
    )
    empty = True
    for batch in as_numpy(ds):
      empty = False
      yield batch
    if empty and not skip:  # Else this would loop forever without yielding.
      raise UserError(
        f'the train split of {spec.name} holds less than one batch of '
        f'{global_batch_size}: lower the batch size'
      )
    epoch, skip = epoch + 1, 0


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates `ds` as dicts of numpy arrays (what the jitted steps consume)."""
  return iter(tfds.as_numpy(ds))


def _check_name(spec: DataSpec) -> str:
  if spec.name not in DATASETS:
    raise UserError(
      f'unknown dataset {spec.name!r} (--config.data.name); valid: {", ".join(DATASETS)}'
    )
  return spec.name


def _check_preprocessing(spec: DataSpec) -> None:
  if spec.augment not in AUGMENTS:
    raise UserError(f'unknown --config.data.augment {spec.augment!r}; valid: {", ".join(AUGMENTS)}')
  if spec.normalization not in NORMALIZATIONS:
    raise UserError(
      f'unknown --config.data.normalization {spec.normalization!r}; valid: '
      f'{", ".join(NORMALIZATIONS)}'
    )
  if not isinstance(spec.image_size, int) or spec.image_size < 2:
    raise UserError(f'--config.data.image_size must be an int >= 2, got {spec.image_size!r}')
  rand_augment.parse(spec.rand_augment)
  if not isinstance(spec.repeated_augment, int) or spec.repeated_augment < 1:
    raise UserError(
      f'--config.data.repeated_augment must be an int >= 1 (1 = off), got {spec.repeated_augment!r}'
    )


def _tfds_builder(spec: DataSpec) -> tfds.core.DatasetBuilder:
  """The builder for a TFDS dataset that is already prepared; never downloads anything."""
  builder = tfds.builder(spec.name, data_dir=spec.data_dir or None)
  if builder.is_prepared():
    return builder
  root = str(builder.data_dir_root)
  if spec.name == 'imagenet2012':
    manual_dir = spec.manual_dir or f'{root}/downloads/manual'
    raise UserError(
      f'imagenet2012 is not prepared in {root}: put ILSVRC2012_img_train.tar and '
      f'ILSVRC2012_img_val.tar in {manual_dir} (--config.data.manual_dir) and run `python -c '
      f"\"import tensorflow_datasets as tfds; tfds.builder('imagenet2012', "
      f"data_dir='{root}').download_and_prepare(download_config=tfds.download.DownloadConfig("
      f"manual_dir='{manual_dir}'))\"`, or set --config.data.data_dir"
    )
  raise UserError(
    f'{spec.name} is not prepared in {root}: run `python -c "import tensorflow_datasets as '
    f"tfds; tfds.builder('{spec.name}', data_dir='{root}').download_and_prepare()\"` on a "
    'machine with internet, or set --config.data.data_dir'
  )


def _examples(
  spec: DataSpec, split: str, process_index: int, process_count: int
) -> tuple[tf.data.Dataset, int]:
  """This process's share of raw {'image', 'label'} examples, and the global split size."""
  name = spec.name
  if name in offline.DATASETS:
    images, labels = offline.load(spec)[split]
    ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
    return ds.shard(process_count, process_index), len(labels)
  builder = _tfds_builder(spec)
  tfds_split = _TFDS_SPLITS[name][split]
  decoders = {'image': tfds.decode.SkipDecoding()} if name in _JPEG_DATASETS else None
  ds = builder.as_dataset(
    split=tfds.split_for_jax_process(
      tfds_split, process_index=process_index, process_count=process_count
    ),
    shuffle_files=False,
    decoders=decoders,
  )
  ds = ds.map(
    lambda ex: {'image': ex['image'], 'label': ex['label']}, num_parallel_calls=tf.data.AUTOTUNE
  )
  return ds, builder.info.splits[tfds_split].num_examples


def _train_batches(
  ds: tf.data.Dataset,
  spec: DataSpec,
  num_examples: int,
  batch: int,
  global_batch_size: int,
  epoch: int,
  skip_batches: int,
  process_index: int,
) -> tf.data.Dataset:
  """Shuffle, cut to whole global batches, skip, then augment (skipped examples cost no decode).

  With repeated augmentation r > 1 (DeiT's RASampler), the epoch takes a random ceil(n / r) of the
  n examples it would have used, shuffles them and repeats each r times in a row, so the copies
  share a batch (or straddle two) and each gets its own augmentation seed; the epoch keeps its
  length.
  """
  entropy = [spec.seed % 2**64, epoch, process_index]
  shuffle_seed, *example_seed = np.random.SeedSequence(entropy).generate_state(3, np.uint32)
  example_seed = tf.constant(example_seed, tf.int64)
  # Each process takes the same count, so all of them run the same number of steps.
  steps = num_examples // global_batch_size
  ds = ds.enumerate()
  repeats = spec.repeated_augment
  if repeats > 1:
    # The epoch's images: a uniformly random ceil(n / r) of the n it uses, chosen before the
    # shuffle buffer (taking them after it would favour the examples that come first on disk).
    used, kept = steps * batch, -(-steps * batch // repeats)
    chosen = np.zeros(max(used, 1), bool)  # Over the local indices an epoch uses (< steps * batch).
    chosen[np.random.default_rng(shuffle_seed).permutation(used)[:kept]] = True
    chosen = tf.constant(chosen)
    ds = ds.filter(
      lambda index, ex: (index < used) & tf.gather(chosen, tf.minimum(index, len(chosen) - 1))
    )
  ds = ds.shuffle(
    max(1, min(spec.shuffle_buffer, num_examples)),
    seed=int(shuffle_seed),
    reshuffle_each_iteration=False,
  )
  if repeats > 1:
    ds = ds.flat_map(lambda index, ex: tf.data.Dataset.from_tensors((index, ex)).repeat(repeats))
    # The copy number (position in the stream) tells the copies' seeds apart.
    ds = ds.enumerate().map(lambda position, item: ((item[0], position), item[1]))
  ds = ds.take(steps * batch).skip(skip_batches * batch)

  def preprocess(index, ex):
    if repeats > 1:
      index, position = index
      index = index * repeats + position % repeats
    seed = tf.random.experimental.stateless_fold_in(example_seed, index)
    return _finish(_train_view(ex['image'], seed, spec), ex['label'], 1.0, spec)

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch, drop_remainder=True)


def _eval_batches(
  ds: tf.data.Dataset, spec: DataSpec, num_examples: int, batch: int, process_count: int
) -> tf.data.Dataset:
  """Every example once, padded so each process yields ceil(ceil(N / P) / b) full batches."""
  size = spec.image_size
  steps = math.ceil(math.ceil(num_examples / process_count) / batch)

  def preprocess(ex):
    image = _eval_view(_decode(ex['image'], spec.name), spec.name, size)
    return _finish(image, ex['label'], 1.0, spec)

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  pad = {
    'image': tf.zeros([size, size, _CHANNELS[spec.name]], tf.float32),
    'label': tf.constant(0, tf.int32),
    'mask': tf.constant(0.0, tf.float32),
  }
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
  return ds.take(steps * batch).batch(batch, drop_remainder=True)


def _finish(
  image: tf.Tensor, label: tf.Tensor, mask: float, spec: DataSpec
) -> dict[str, tf.Tensor]:
  """Normalises and fixes the static shape, so real and padding elements share one tf spec."""
  size = spec.image_size
  image = tf.ensure_shape(_normalize(image, spec.normalization), [size, size, _CHANNELS[spec.name]])
  return {'image': image, 'label': tf.cast(label, tf.int32), 'mask': tf.constant(mask, tf.float32)}


def _decode(image: tf.Tensor, name: str) -> tf.Tensor:
  if name in _JPEG_DATASETS:
    return tf.io.decode_jpeg(image, channels=3)
  return image


def _eval_view(image: tf.Tensor, name: str, size: int) -> tf.Tensor:
  """Deterministic float32 [size, size, C] view of a decoded uint8 image."""
  image = tf.cast(image, tf.float32)
  if name == 'imagenet2012':
    return _central_crop(_resize_short_side(image, round(size / _EVAL_CROP_FRACTION)), size)
  if image.shape[0] != size or image.shape[1] != size:
    return _resize(image, size, size)
  return image


def _train_view(image: tf.Tensor, seed: tf.Tensor, spec: DataSpec) -> tf.Tensor:
  """Augmented float32 [size, size, C] view: crop, flip, then RandAugment (timm's order); the
  randomness comes only from `seed`."""
  name, size, augment = spec.name, spec.image_size, spec.augment
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if augment == 'inception_crop':
    image = _inception_crop(image, crop_seed, size, jpeg=name in _JPEG_DATASETS)
  else:
    image = _eval_view(_decode(image, name), name, size)
    if augment in ('crop', 'crop_flip'):
      pad = max(1, size // 8)
      image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
      image = tf.image.stateless_random_crop(image, [size, size, _CHANNELS[name]], crop_seed)
  if augment in ('crop_flip', 'inception_crop'):
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  policy = rand_augment.parse(spec.rand_augment)
  if policy:
    fill = rand_augment.fill_color(spec.normalization, _CHANNELS[name])
    policy_seed = tf.random.experimental.stateless_fold_in(seed, 2)  # Crop and flip keep theirs.
    image = rand_augment.rand_augment(image, policy_seed, policy, fill)
  return image


def _inception_crop(image: tf.Tensor, seed: tf.Tensor, size: int, *, jpeg: bool) -> tf.Tensor:
  """Random-resized crop (8%-100% of the area, aspect 3/4-4/3); JPEGs decode only the crop."""
  shape = tf.image.extract_jpeg_shape(image) if jpeg else tf.shape(image)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    tf.zeros([0, 0, 4], tf.float32),
    seed=seed,
    min_object_covered=0.0,
    aspect_ratio_range=(3 / 4, 4 / 3),
    area_range=(0.08, 1.0),
    use_image_if_no_bounding_boxes=True,
  )
  if jpeg:
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    image = tf.image.decode_and_crop_jpeg(image, window, channels=3)
  else:
    image = tf.slice(image, begin, crop_size)
  return _resize(tf.cast(image, tf.float32), size, size)


def _resize(image: tf.Tensor, height: Any, width: Any) -> tf.Tensor:
  """Antialiased bilinear resize; the clip keeps values in the uint8 range normalisation assumes."""
  image = tf.image.resize(image, [height, width], method='bilinear', antialias=True)
  return tf.clip_by_value(image, 0.0, 255.0)


def _resize_short_side(image: tf.Tensor, short: int) -> tf.Tensor:
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  scale = short / tf.minimum(h, w)
  new_h = tf.maximum(short, tf.cast(tf.round(h * scale), tf.int32))
  new_w = tf.maximum(short, tf.cast(tf.round(w * scale), tf.int32))
  return _resize(image, new_h, new_w)


def _central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  shape = tf.shape(image)
  top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
  return image[top : top + size, left : left + size]


def _normalize(image: tf.Tensor, normalization: str) -> tf.Tensor:
  """Grey images under 'imagenet' use the mean of the three channel statistics."""
  if normalization == 'minus_one_to_one':
    return image / 127.5 - 1.0
  mean, std = np.array(_IMAGENET_MEAN, np.float32), np.array(_IMAGENET_STD, np.float32)
  if image.shape[-1] == 1:
    mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
  return (image / 255.0 - mean) / std
