"""RandAugment: its ops against Pillow (what timm's ops call) and hand numbers, its draws against
timm's distributions, its config string against timm's parser."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from vitprune_jax.data import rand_augment as ra
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import config as config_lib

_DEIT = ra.RandAugmentSpec(magnitude=9.0, magnitude_std=0.5, increasing=True)


def _image(channels: int, seed: int = 0) -> np.ndarray:
  """Pixels in 10..239: auto-contrast stretches them, solarize at 26 is not invert, and 32 x 21 is
  enough pixels for equalize's table (its step is pixels // 255) to move them."""
  return np.random.default_rng(seed).integers(10, 240, size=(32, 21, channels), dtype=np.uint8)


def _pil(image: np.ndarray) -> Image.Image:
  return Image.fromarray(image if image.shape[-1] == 3 else image[..., 0])


def _array(image: Image.Image) -> np.ndarray:
  out = np.asarray(image).astype(np.int32)
  return out if out.ndim == 3 else out[..., None]


def _ours(op, image: np.ndarray, *args) -> np.ndarray:
  return op(tf.constant(image, tf.int32), *args).numpy()


def _fill(channels: int) -> tuple[int, ...]:
  return ra.fill_color('imagenet', channels)


def _pil_fill(channels: int):
  fill = _fill(channels)
  return fill if channels == 3 else fill[0]


def test_parse_reads_timm_strings():
  assert ra.parse('') is None
  assert ra.parse('rand-m9-mstd0.5-inc1') == ra.RandAugmentSpec(
    magnitude=9.0, num_layers=2, magnitude_std=0.5, magnitude_max=10.0, increasing=True
  )
  assert ra.parse('rand-m7-n3-mmax12') == ra.RandAugmentSpec(
    magnitude=7.0, num_layers=3, magnitude_max=12.0
  )
  assert ra.parse('rand-mstd101').magnitude_std == math.inf  # timm: > 100 means uniform.
  assert ra.parse('rand') == ra.RandAugmentSpec()  # timm's defaults: m10, n2.
  assert ra.parse('rand-mmax0').magnitude_max == 10.0  # timm: `magnitude_max or 10`.


@pytest.mark.parametrize(
  'bad', ['randaug-m9', 'rand-m9-x1', 'rand-w0', 'rand-n0', 'rand-m', 'rand-m9.5']
)
def test_parse_rejects_what_timm_would_not_run(bad):
  with pytest.raises(UserError, match='rand_augment'):
    ra.parse(bad)


def test_fill_is_timms_img_mean():
  # round(255 * (0.485, 0.456, 0.406)) = round(123.675, 116.28, 103.53); grey 255 * 0.449 = 114.495
  assert ra.fill_color('imagenet', 3) == (124, 116, 104)
  assert ra.fill_color('imagenet', 1) == (114,)
  assert ra.fill_color('minus_one_to_one', 3) == (128, 128, 128)  # timm's _FILL.


def test_colour_ops_by_hand():
  row = np.array([[[50], [100], [150]]], np.uint8)
  # scale 255 / 100 = 2.55: int(100 * 2.55 - 127.5) = int(127.5) = 127.
  np.testing.assert_array_equal(_ours(ra.auto_contrast, row)[0, :, 0], [0, 127, 255])
  np.testing.assert_array_equal(_ours(ra.invert, row)[0, :, 0], [205, 155, 105])
  np.testing.assert_array_equal(_ours(ra.posterize, row, 2)[0, :, 0], [0, 64, 128])
  np.testing.assert_array_equal(_ours(ra.posterize, row, 0)[0, :, 0], [0, 0, 0])  # Black, as TF.
  np.testing.assert_array_equal(_ours(ra.solarize, row, 100)[0, :, 0], [50, 155, 105])
  np.testing.assert_array_equal(_ours(ra.solarize_add, row, 99)[0, :, 0], [149, 199, 150])
  # 0.5 * (50, 100, 150) = 25, 50, 75; x1.81: 90.5 -> 90, 181, 271.5 -> 255.
  np.testing.assert_array_equal(_ours(ra.brightness, row, 0.5)[0, :, 0], [25, 50, 75])
  np.testing.assert_array_equal(_ours(ra.brightness, row, 1.81)[0, :, 0], [90, 181, 255])
  # Mean grey 100: factor 0.19 gives 100 + 0.19 * (-50, 0, 50) = 90.5, 100, 109.5, truncated.
  np.testing.assert_array_equal(_ours(ra.contrast, row, 0.19)[0, :, 0], [90, 100, 109])


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('seed', [0, 1])
def test_colour_ops_equal_pillow(channels, seed):
  image = _image(channels, seed)
  if seed:
    image = image // 40 * 40  # Few grey levels, so equalize's table has steps.
  pil = _pil(image)
  for ours, ref in [
    (_ours(ra.auto_contrast, image), ImageOps.autocontrast(pil)),
    (_ours(ra.equalize, image), ImageOps.equalize(pil)),
    (_ours(ra.invert, image), ImageOps.invert(pil)),
    (_ours(ra.solarize, image, 26), ImageOps.solarize(pil, 26)),
  ] + [(_ours(ra.posterize, image, b), ImageOps.posterize(pil, b)) for b in (1, 3, 7)]:
    np.testing.assert_array_equal(ours, _array(ref))
  for factor in (0.19, 0.5, 1.0, 1.72, 1.81):
    for op, enhance in [
      (ra.color, ImageEnhance.Color),
      (ra.contrast, ImageEnhance.Contrast),
      (ra.brightness, ImageEnhance.Brightness),
      (ra.sharpness, ImageEnhance.Sharpness),
    ]:
      np.testing.assert_array_equal(
        _ours(op, image, factor), _array(enhance(pil).enhance(factor)), err_msg=f'{op} {factor}'
      )


@pytest.mark.parametrize('channels', [1, 3])
def test_geometric_ops_match_pillow_bilinear(channels):
  image, fill = _image(channels), _fill(channels)
  pil, pil_fill = _pil(image), _pil_fill(channels)

  def affine(matrix):
    return _array(pil.transform(pil.size, Image.AFFINE, matrix, Image.BILINEAR, fillcolor=pil_fill))

  # Translations land on pixel centres or halfway between them: exact, fill included.
  for pixels in (3.0, -2.0, 2.5, -6.75):
    np.testing.assert_array_equal(
      _ours(ra.translate_x, image, pixels, fill), affine((1, 0, pixels, 0, 1, 0))
    )
    np.testing.assert_array_equal(
      _ours(ra.translate_y, image, pixels, fill), affine((1, 0, 0, 0, 1, pixels))
    )
  # Rotation and shear: float32 here, float64 in Pillow, so an odd pixel may truncate one lower.
  pairs = [
    (_ours(ra.rotate, image, deg, fill), pil.rotate(deg, Image.BILINEAR, fillcolor=pil_fill))
    for deg in (27.0, -13.5)
  ]
  pairs += [(_ours(ra.shear_x, image, 0.27, fill), affine((1, 0.27, 0, 0, 1, 0)))]
  pairs += [(_ours(ra.shear_y, image, -0.27, fill), affine((1, 0, 0, -0.27, 1, 0)))]
  for ours, ref in pairs:
    diff = np.abs(ours - _array(ref))
    assert diff.max() <= 1 and diff.mean() < 0.1


def _timm_op(index: int, sign: float, pil: Image.Image, channels: int) -> np.ndarray:
  """timm's inc1 op OPS[index] at magnitude 9, its level-to-argument maps worked out by hand."""
  fill = _pil_fill(channels)
  w, h = pil.size
  factor = 1.0 + sign * 0.81  # 1 +- (9 / 10) * 0.9.
  ops = [
    lambda: ImageOps.autocontrast(pil),
    lambda: ImageOps.equalize(pil),
    lambda: ImageOps.invert(pil),
    lambda: pil.rotate(sign * 27.0, Image.BILINEAR, fillcolor=fill),  # (9 / 10) * 30 degrees.
    lambda: ImageOps.posterize(pil, 1),  # 4 - int(0.9 * 4) bits.
    lambda: ImageOps.solarize(pil, 26),  # 256 - int(0.9 * 256).
    lambda: pil.point([min(255, i + 99) if i < 128 else i for i in range(256)] * channels),
    lambda: ImageEnhance.Color(pil).enhance(factor),
    lambda: ImageEnhance.Contrast(pil).enhance(factor),
    lambda: ImageEnhance.Brightness(pil).enhance(factor),
    lambda: ImageEnhance.Sharpness(pil).enhance(factor),
    lambda: pil.transform(
      pil.size, Image.AFFINE, (1, sign * 0.27, 0, 0, 1, 0), Image.BILINEAR, fillcolor=fill
    ),
    lambda: pil.transform(
      pil.size, Image.AFFINE, (1, 0, 0, sign * 0.27, 1, 0), Image.BILINEAR, fillcolor=fill
    ),
    lambda: pil.transform(
      pil.size, Image.AFFINE, (1, 0, sign * 0.405 * w, 0, 1, 0), Image.BILINEAR, fillcolor=fill
    ),
    lambda: pil.transform(
      pil.size, Image.AFFINE, (1, 0, 0, 0, 1, sign * 0.405 * h), Image.BILINEAR, fillcolor=fill
    ),
  ]
  return _array(ops[index]())


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_apply_op_uses_timms_arguments(channels, sign):
  image = _image(channels, seed=3)
  for index, name in enumerate(ra.OPS):
    ours = ra.apply_op(tf.constant(image, tf.int32), index, 9.0, sign, True, _fill(channels))
    diff = np.abs(ours.numpy() - _timm_op(index, sign, _pil(image), channels))
    # The geometric ops sample between pixels (0.405 * 32 = 12.96): float32 here, float64 in Pillow.
    geometric = ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')
    assert diff.max() <= (1 if name in geometric else 0), name


def test_apply_op_non_increasing_arguments():
  image = _image(3, seed=4)
  pil = _pil(image)

  def ours(name):
    return ra.apply_op(tf.constant(image, tf.int32), ra.OPS.index(name), 9.0, 1.0, False, (0,) * 3)

  np.testing.assert_array_equal(ours('Posterize'), _array(ImageOps.posterize(pil, 3)))  # int 3.6.
  np.testing.assert_array_equal(ours('Solarize'), _array(ImageOps.solarize(pil, 230)))  # int 230.4
  contrast = ImageEnhance.Contrast(pil).enhance(1.72)  # 0.9 * 1.8 + 0.1, whatever the sign.
  np.testing.assert_array_equal(ours('Contrast'), _array(contrast))


def test_sample_op_draws_timms_distributions():
  draws = [ra.sample_op(tf.constant([7, i]), _DEIT) for i in range(3000)]
  index, applied, magnitude, sign = (np.array([d[k].numpy() for d in draws]) for k in range(4))
  counts = np.bincount(index, minlength=len(ra.OPS))
  assert counts.min() > 3000 / 15 * 0.75 and counts.max() < 3000 / 15 * 1.25  # 200 +- 25 %.
  assert abs(applied.mean() - 0.5) < 0.03 and abs((sign > 0).mean() - 0.5) < 0.03
  assert abs(magnitude.mean() - 9.0) < 0.03 and abs(magnitude.std() - 0.5) < 0.03
  assert magnitude.max() <= 10.0  # N(9, 0.5) clipped to mmax.
  fixed = ra.RandAugmentSpec(magnitude=9.0)
  assert ra.sample_op(tf.constant([7, 0]), fixed)[2].numpy() == 9.0
  uniform = ra.RandAugmentSpec(magnitude=9.0, magnitude_std=math.inf)
  magnitudes = np.array([ra.sample_op(tf.constant([1, i]), uniform)[2] for i in range(500)])
  assert magnitudes.min() >= 0 and magnitudes.max() <= 9 and abs(magnitudes.mean() - 4.5) < 0.3


def test_rand_augment_is_a_function_of_the_seed():
  image = tf.constant(_image(3, seed=5), tf.float32)

  def run(seed, spec=_DEIT):
    return ra.rand_augment(image, tf.constant([0, seed]), spec, (124, 116, 104)).numpy()

  np.testing.assert_array_equal(run(1), run(1))
  outs = [
    run(seed, ra.RandAugmentSpec(magnitude=9.0, num_layers=1, increasing=True))
    for seed in range(200)
  ]
  unchanged = np.mean([np.array_equal(out, image.numpy()) for out in outs])
  # Each of the 15 ops changes this image, so one layer leaves it as it was with probability 0.5.
  assert 0.4 < unchanged < 0.6
  assert all(out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255 for out in outs)


@pytest.mark.parametrize(
  'value', ['', 'rand', 'rand-m9-mstd0.5-inc1', 'rand-m7-n3-mmax12', 'rand-w0', 'rand-n0', 'aa-m9']
)
def test_the_config_check_accepts_what_parse_reads(value):
  """The config check (which runs before TensorFlow loads) and `parse` agree on every string."""
  try:
    ra.parse(value)
    parsed = True
  except UserError:
    parsed = False
  assert (config_lib.CHECKS['data.rand_augment'](value) is None) == parsed
