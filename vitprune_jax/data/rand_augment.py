"""RandAugment (Cubuk et al. 2020) as timm implements it (`timm/data/auto_augment.py`), in
TensorFlow ops for the tf.data pipeline, with stateless randomness.

Each op takes and returns an int32 [H, W, C] image of uint8 values (C = 1 or 3) and reproduces
what timm's PIL op returns on the same pixels: the colour ops (auto-contrast, equalize, invert,
posterize, solarize, solarize-add, colour, contrast, brightness, sharpness) exactly, Pillow's
arithmetic and rounding included; the geometric ones (rotate, shear, translate) with bilinear
sampling, where DeiT asks PIL for bicubic (TensorFlow's image transform has no bicubic mode), so
they match PIL's bilinear output up to interpolation at the edges.

`parse` reads timm's config string ('rand-m9-mstd0.5-inc1' is DeiT's); `rand_augment` applies
`num_layers` ops drawn with replacement, each with probability 0.5 and a magnitude drawn from
N(m, mstd) clipped to [0, mmax], as timm's `RandAugment` and `AugmentOp` do.
"""

import dataclasses
import math
import re

import numpy as np
import tensorflow as tf

from vitprune_jax.errors import UserError

_LEVEL_DENOM = 10.0  # timm: magnitude m stands for the fraction m / 10 of each op's range.
_OP_PROB = 0.5  # timm's rand_augment_ops: every op fires with probability 0.5.
_TRANSLATE_PCT = 0.45  # timm's default translate_pct for TranslateXRel / TranslateYRel.
# timm's _RAND_TRANSFORMS; with inc1 (_RAND_INCREASING_TRANSFORMS) Posterize, Solarize and the four
# enhance ops use the variants whose strength grows with the magnitude.
OPS = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'SolarizeAdd',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateXRel',
  'TranslateYRel',
)


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
  magnitude: float = 10.0  # m: the op strength, 0..mmax.
  num_layers: int = 2  # n: ops applied per image.
  magnitude_std: float = 0.0  # mstd: std of the per-op magnitude noise; inf = uniform in [0, m].
  magnitude_max: float = 10.0  # mmax: the magnitude is clipped to [0, mmax].
  increasing: bool = False  # inc1: the ops whose strength grows with the magnitude.


def parse(config_str: str) -> RandAugmentSpec | None:
  """timm's RandAugment string ('rand-m9-mstd0.5-inc1'), or None for ''."""
  if not config_str:
    return None
  hint = (
    f"--config.data.rand_augment={config_str!r} is not a RandAugment string like timm's "
    "'rand-m9-mstd0.5-inc1' (sections m, n, mstd, mmax, inc after 'rand'; '' = off)"
  )
  head, *sections = config_str.split('-')
  if head != 'rand':
    raise UserError(hint)
  fields = {}
  for section in sections:
    match = re.fullmatch(r'(mstd)(\d+(?:\.\d*)?)|(mmax|inc|m|n)(\d+)', section)
    if not match:
      raise UserError(hint + ('; op weights (w) are not supported' if section[:1] == 'w' else ''))
    key, value = [group for group in match.groups() if group is not None]
    if key == 'mstd':
      fields['magnitude_std'] = math.inf if float(value) > 100 else float(value)  # As timm.
    elif key == 'mmax':
      fields['magnitude_max'] = float(int(value)) or _LEVEL_DENOM  # As timm: mmax0 = 10.
    elif key == 'inc':
      fields['increasing'] = bool(int(value))  # timm's bool('0') reads inc0 as on; here it is off.
    elif key == 'm':
      fields['magnitude'] = float(int(value))
    elif int(value) < 1:
      raise UserError(hint + f'; n must be a whole number >= 1, got {value}')
    else:
      fields['num_layers'] = int(value)
  return RandAugmentSpec(**fields)


def fill_color(normalization: str, channels: int) -> tuple[int, ...]:
  """What geometric ops fill with: timm's img_mean, round(255 * mean), or its grey default."""
  if normalization == 'imagenet':
    mean = np.array((0.485, 0.456, 0.406))
    mean = mean if channels == 3 else mean.mean(keepdims=True)
    return tuple(min(255, round(255 * m)) for m in mean)
  return (128,) * channels


def rand_augment(
  image: tf.Tensor, seed: tf.Tensor, spec: RandAugmentSpec, fill: tuple[int, ...]
) -> tf.Tensor:
  """`spec.num_layers` random ops on a float32 [H, W, C] image in 0..255 (rounded to uint8 values
  first, as PIL holds them); returns float32. All randomness comes from `seed` (shape [2])."""
  image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.int32)
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, spec.num_layers)):
    index, applied, magnitude, sign = sample_op(layer_seed, spec)
    image = tf.cond(
      applied, lambda: apply_op(image, index, magnitude, sign, spec.increasing, fill), lambda: image
    )
  return tf.cast(image, tf.float32)


def sample_op(seed: tf.Tensor, spec: RandAugmentSpec) -> tuple[tf.Tensor, ...]:
  """One layer's draws, as timm's RandAugment and AugmentOp make them: the op index (uniform over
  OPS, with replacement), whether it fires (probability 0.5), its magnitude (noisy, clipped to [0,
  mmax]) and the sign of the signed ops (each way with probability 0.5)."""
  choice_seed, apply_seed, magnitude_seed, sign_seed = tf.unstack(
    tf.random.experimental.stateless_split(seed, 4)
  )
  index = tf.random.stateless_uniform([], choice_seed, 0, len(OPS), dtype=tf.int32)
  applied = tf.random.stateless_uniform([], apply_seed) < _OP_PROB
  magnitude = tf.constant(spec.magnitude, tf.float32)
  if math.isinf(spec.magnitude_std):
    magnitude = tf.random.stateless_uniform([], magnitude_seed, 0.0, spec.magnitude)
  elif spec.magnitude_std > 0:
    magnitude += spec.magnitude_std * tf.random.stateless_normal([], magnitude_seed)
  # float64 from here on, so the level-to-argument maps round as timm's Python floats do.
  magnitude = tf.clip_by_value(tf.cast(magnitude, tf.float64), 0.0, spec.magnitude_max)
  sign = tf.where(tf.random.stateless_uniform([], sign_seed) > 0.5, -1.0, 1.0)
  return index, applied, magnitude, tf.cast(sign, tf.float64)


def apply_op(
  image: tf.Tensor,
  index: tf.Tensor,
  magnitude: tf.Tensor,
  sign: tf.Tensor,
  increasing: bool,
  fill: tuple[int, ...],
) -> tf.Tensor:
  """OPS[index] on an int32 image at `magnitude` (float64), with timm's maps from the level
  magnitude / 10 to arguments: rotate 30 level degrees, shear 0.3 level, translate 0.45 level of
  the side (each signed by `sign`), solarize-add 110 level; posterize bits, solarize threshold and
  the enhance factors as `increasing` says."""
  level = tf.cast(magnitude, tf.float64) / _LEVEL_DENOM
  sign = tf.cast(sign, tf.float64)
  factor = _enhance_factor(level, sign, increasing)
  branches = [
    lambda: auto_contrast(image),
    lambda: equalize(image),
    lambda: invert(image),
    lambda: rotate(image, sign * level * 30.0, fill),
    lambda: posterize(image, _posterize_bits(level, increasing)),
    lambda: solarize(image, _solarize_threshold(level, increasing)),
    lambda: solarize_add(image, tf.cast(level * 110.0, tf.int32)),
    lambda: color(image, factor),
    lambda: contrast(image, factor),
    lambda: brightness(image, factor),
    lambda: sharpness(image, factor),
    lambda: shear_x(image, sign * level * 0.3, fill),
    lambda: shear_y(image, sign * level * 0.3, fill),
    lambda: translate_x(image, sign * level * _TRANSLATE_PCT * _width(image, tf.float64), fill),
    lambda: translate_y(image, sign * level * _TRANSLATE_PCT * _height(image, tf.float64), fill),
  ]
  return tf.switch_case(tf.convert_to_tensor(index, tf.int32), branches)


def _posterize_bits(level: tf.Tensor, increasing: bool) -> tf.Tensor:
  bits = tf.cast(level * 4.0, tf.int32)  # int((m / 10) * 4): 0..4 bits.
  return 4 - bits if increasing else bits


def _solarize_threshold(level: tf.Tensor, increasing: bool) -> tf.Tensor:
  threshold = tf.cast(level * 256.0, tf.int32)
  return 256 - threshold if increasing else threshold


def _enhance_factor(level: tf.Tensor, sign: tf.Tensor, increasing: bool) -> tf.Tensor:
  if increasing:
    return tf.maximum(tf.constant(0.1, level.dtype), 1.0 + sign * level * 0.9)
  return level * 1.8 + 0.1


def _width(image: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
  return tf.cast(tf.shape(image)[1], dtype)


def _height(image: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
  return tf.cast(tf.shape(image)[0], dtype)


# The colour ops. Pillow applies the per-pixel ones as lookup tables, one per channel.


def _apply_lut(image: tf.Tensor, lut: tf.Tensor) -> tf.Tensor:
  """image int32 [H, W, C] through per-channel tables lut int [C, 256] (Pillow's `point`)."""
  channels = tf.shape(lut)[0]
  flat = tf.reshape(tf.clip_by_value(tf.cast(lut, tf.int32), 0, 255), [-1])
  return tf.gather(flat, image + 256 * tf.range(channels))


def _channel_lut(image: tf.Tensor, table: tf.Tensor) -> tf.Tensor:
  """One table [256] for every channel."""
  return _apply_lut(image, tf.tile(table[None], [tf.shape(image)[-1], 1]))


def _histograms(image: tf.Tensor) -> tf.Tensor:
  """int64 [C, 256] per-channel pixel counts."""
  channels = tf.transpose(tf.reshape(image, [-1, tf.shape(image)[-1]]))
  return tf.math.bincount(channels, minlength=256, maxlength=256, dtype=tf.int64, axis=-1)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.autocontrast: each channel stretched from [min, max] to [0, 255]."""
  pixels = tf.reshape(image, [-1, tf.shape(image)[-1]])
  lo = tf.cast(tf.reduce_min(pixels, axis=0), tf.float64)[:, None]
  hi = tf.cast(tf.reduce_max(pixels, axis=0), tf.float64)[:, None]
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  ramp = tf.range(256, dtype=tf.float64)[None]
  stretched = tf.cast(ramp * scale + (-lo * scale), tf.int32)  # int() truncates, as Pillow.
  lut = tf.where(hi > lo, stretched, tf.cast(ramp, tf.int32))
  return _apply_lut(image, lut)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """ImageOps.equalize: Pillow's histogram-equalisation table, per channel."""
  hist = _histograms(image)
  nonzero = hist > 0
  last = 255 - tf.argmax(
    tf.cast(tf.reverse(nonzero, [-1]), tf.int32), axis=-1, output_type=tf.int32
  )
  last_count = tf.gather(hist, last, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=-1) - last_count) // 255
  identity = (tf.reduce_sum(tf.cast(nonzero, tf.int32), axis=-1) <= 1) | (step == 0)
  safe_step = tf.maximum(step, 1)[:, None]
  before = tf.cumsum(hist, axis=-1, exclusive=True)
  lut = (safe_step // 2 + before) // safe_step
  ramp = tf.range(256, dtype=tf.int64)[None]
  return _apply_lut(image, tf.where(identity[:, None], ramp, lut))


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """Keeps the `bits` high bits (timm: unchanged for bits >= 8; 0 bits gives black)."""
  bits = tf.convert_to_tensor(bits, tf.int32)
  mask = tf.bitwise.invert(tf.bitwise.left_shift(1, 8 - tf.minimum(bits, 8)) - 1)
  return tf.where(bits >= 8, image, tf.bitwise.bitwise_and(image, mask))


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """Inverts the pixels >= threshold."""
  return tf.where(image < threshold, image, 255 - image)


def solarize_add(image: tf.Tensor, add: tf.Tensor, threshold: int = 128) -> tf.Tensor:
  """Adds `add` (saturating at 255) to the pixels below threshold."""
  return tf.where(image < threshold, tf.minimum(255, image + add), image)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """Image.blend(degenerate, image, factor): float32 in Pillow's C code, clipped, truncated."""
  low, high = tf.cast(degenerate, tf.float32), tf.cast(image, tf.float32)
  mixed = low + tf.cast(factor, tf.float32) * (high - low)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.int32)


def _grey(image: tf.Tensor) -> tf.Tensor:
  """Pillow's RGB -> L conversion (ITU-R 601-2 luma in 16-bit fixed point), [H, W, 1]."""
  if image.shape[-1] == 1:
    return image
  weights = tf.constant([19595, 38470, 7471], tf.int32)
  return tf.bitwise.right_shift(tf.reduce_sum(image * weights, -1, keepdims=True) + 0x8000, 16)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Color: blend with the grey image (a no-op on grey images)."""
  return _blend(tf.broadcast_to(_grey(image), tf.shape(image)), image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Contrast: blend with a flat image at the rounded mean grey level."""
  mean = tf.reduce_mean(tf.cast(_grey(image), tf.float64))
  flat = tf.fill(tf.shape(image), tf.cast(mean + 0.5, tf.int32))
  return _blend(flat, image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Brightness: blend with black."""
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH (3x3 kernel 1 1 1 / 1 5 1 / 1 1 1 over
  13, rounded; the one-pixel border stays as it was)."""
  padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  window = tf.add_n([padded[i : i + height, j : j + width] for i in range(3) for j in range(3)])
  smooth = (2 * (window + 4 * image) + 13) // 26  # round((window + 4 centre) / 13), exactly.
  rows, cols = tf.range(height)[:, None, None], tf.range(width)[None, :, None]
  inside = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
  return _blend(tf.where(inside, smooth, image), image, factor)


# The geometric ops: Pillow's affine transforms, output pixel -> input point, in its coordinates
# (pixel centres at i + 0.5), and `fill` (one value per channel) outside the image.


def affine(image: tf.Tensor, matrix: tf.Tensor, fill: tuple[int, ...]) -> tf.Tensor:
  """Image.transform(size, AFFINE, (a, b, c, d, e, f), BILINEAR): output pixel (x, y) samples the
  input at (a x + b y + c, d x + e y + f), as Pillow does: points outside the image take `fill`,
  points inside interpolate between edge-clamped neighbours, and the result is truncated."""
  a, b, c, d, e, f = tf.unstack(tf.cast(matrix, tf.float32))
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  # Pillow samples output centre (x + 0.5, y + 0.5) at input point p, which is index p - 0.5.
  shifted = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0.0, 0.0])
  out = tf.raw_ops.ImageProjectiveTransformV3(
    images=tf.cast(image, tf.float32)[None],
    transforms=shifted[None],
    output_shape=tf.stack([height, width]),
    fill_value=0.0,
    interpolation='BILINEAR',
    fill_mode='NEAREST',  # Edge-clamped neighbours, as Pillow's bilinear filter.
  )[0]
  ys = tf.cast(tf.range(height), tf.float32)[:, None] + 0.5
  xs = tf.cast(tf.range(width), tf.float32)[None, :] + 0.5
  x_in, y_in = a * xs + b * ys + c, d * xs + e * ys + f
  inside = (x_in >= 0) & (x_in < tf.cast(width, tf.float32))
  inside &= (y_in >= 0) & (y_in < tf.cast(height, tf.float32))
  # Pillow truncates the interpolated value; the 1e-3 absorbs float32 error on exact values.
  sampled = tf.cast(tf.clip_by_value(tf.floor(out + 1e-3), 0.0, 255.0), tf.int32)
  return tf.where(inside[..., None], sampled, tf.constant(fill, tf.int32))


def rotate(image: tf.Tensor, degrees: tf.Tensor, fill: tuple[int, ...]) -> tf.Tensor:
  """Image.rotate(degrees): counter-clockwise about the centre (w / 2, h / 2), same size."""
  angle = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = _width(image) / 2.0, _height(image) / 2.0
  c = cos * -cx + sin * -cy + cx
  f = -sin * -cx + cos * -cy + cy
  return affine(image, tf.stack([cos, sin, c, -sin, cos, f]), fill)


def shear_x(image: tf.Tensor, factor: tf.Tensor, fill: tuple[int, ...]) -> tf.Tensor:
  return affine(image, tf.stack([1.0, factor, 0.0, 0.0, 1.0, 0.0]), fill)


def shear_y(image: tf.Tensor, factor: tf.Tensor, fill: tuple[int, ...]) -> tf.Tensor:
  return affine(image, tf.stack([1.0, 0.0, 0.0, factor, 1.0, 0.0]), fill)


def translate_x(image: tf.Tensor, pixels: tf.Tensor, fill: tuple[int, ...]) -> tf.Tensor:
  """Output column x shows input column x + pixels."""
  return affine(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]), fill)


def translate_y(image: tf.Tensor, pixels: tf.Tensor, fill: tuple[int, ...]) -> tf.Tensor:
  return affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]), fill)
