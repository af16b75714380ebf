"""DeiT's batch augmentations on device, as pure JAX functions of a key: mixup, cutmix and random
erasing (timm's `Mixup` in its default batch mode, and `RandomErasing` in 'pixel' mode).

They run inside the jitted train step, after the tf.data pipeline, so the host only decodes and
crops. Each is deterministic given its key; the train step derives the key from the run's seed and
the step, so a resumed run sees the same augmented batches.

- `mixup_cutmix`: one lambda per batch. With probability `prob` the batch is mixed with itself in
  reverse order: cutmix (with probability `switch_prob` when both are on) pastes a box of the
  reversed batch whose area share is 1 - lambda, lambda ~ Beta(cutmix_alpha, cutmix_alpha), and
  lambda is then corrected to the box's real area; mixup blends the images with lambda ~
  Beta(mixup_alpha, mixup_alpha). The targets (smoothed one-hot) are mixed with the same lambda.
- `random_erasing`: written for one image (`vmap` it over the batch): with probability `prob`, a box
  of area share in [1/50, 1/3] and log-uniform aspect ratio in [0.3, 3.3] (up to 10 tries, as timm)
  is filled with standard normal noise per pixel and channel (the pipeline has normalised the image
  already).
"""

import math

import jax
import jax.numpy as jnp

Array = jax.Array


def box_mask(height: int, width: int, top: Array, left: Array, h: Array, w: Array) -> Array:
  """(height, width) bool: True inside the box of h x w pixels whose top-left corner is at
  (top, left) (traced ints; static shape)."""
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


def cutmix_box(key: Array, height: int, width: int, lam: Array) -> tuple[Array, Array]:
  """timm's `rand_bbox`: a box with sides int(side * sqrt(1 - lam)) around a uniform centre,
  clipped to the image. Returns its mask (height, width) and the corrected lambda, 1 - area share.
  """
  cut = jnp.sqrt(1.0 - lam)
  cut_h, cut_w = (height * cut).astype(jnp.int32), (width * cut).astype(jnp.int32)
  ky, kx = jax.random.split(key)
  cy = jax.random.randint(ky, (), 0, height)
  cx = jax.random.randint(kx, (), 0, width)
  y0, y1 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  x0, x1 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  mask = box_mask(height, width, y0, x0, y1 - y0, x1 - x0)
  return mask, 1.0 - jnp.mean(mask.astype(jnp.float32))


def mixup_cutmix(
  key: Array,
  images: Array,
  targets: Array,
  *,
  mixup_alpha: float,
  cutmix_alpha: float,
  switch_prob: float = 0.5,
  prob: float = 1.0,
) -> tuple[Array, Array]:
  """Mixed images (B, H, W, C) and targets (B, classes) (timm's `Mixup`, batch mode).

  Args:
    key: PRNG key.
    images: the batch (B, H, W, C).
    targets: soft targets (B, classes), e.g. smoothed one-hot labels.
    mixup_alpha, cutmix_alpha: Beta parameters; 0 turns that one off (both 0: the identity).
    switch_prob: when both are on, the chance of cutmix rather than mixup.
    prob: the chance that the batch is mixed at all.
  """
  if mixup_alpha <= 0.0 and cutmix_alpha <= 0.0:
    return images, targets
  k_apply, k_switch, k_mix, k_cut, k_box = jax.random.split(key, 5)
  mixed = jax.random.uniform(k_apply) < prob
  if mixup_alpha > 0.0 and cutmix_alpha > 0.0:
    use_cutmix = jax.random.uniform(k_switch) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0.0)
  a_mix = mixup_alpha if mixup_alpha > 0.0 else 1.0  # An unused draw still needs a valid Beta.
  a_cut = cutmix_alpha if cutmix_alpha > 0.0 else 1.0
  lam_mix = jax.random.beta(k_mix, a_mix, a_mix)
  lam_cut = jax.random.beta(k_cut, a_cut, a_cut)
  box, lam_box = cutmix_box(k_box, images.shape[1], images.shape[2], lam_cut)
  flipped = images[::-1]
  blended = lam_mix * images + (1.0 - lam_mix) * flipped
  pasted = jnp.where(box[None, :, :, None], flipped, images)
  lam = jnp.where(mixed, jnp.where(use_cutmix, lam_box, lam_mix), 1.0)
  out = jnp.where(mixed, jnp.where(use_cutmix, pasted, blended), images)
  return out.astype(images.dtype), lam * targets + (1.0 - lam) * targets[::-1]


def random_erasing(
  key: Array,
  image: Array,
  *,
  prob: float,
  area: tuple[float, float] = (0.02, 1.0 / 3.0),
  aspect: tuple[float, float] = (0.3, 1.0 / 0.3),
  attempts: int = 10,
) -> Array:
  """One image (H, W, C) with a random box filled with N(0, 1) noise, with probability `prob`
  (timm's `RandomErasing(mode='pixel')`). The first of `attempts` boxes that fits is used; if none
  fits, the image is unchanged."""
  if prob <= 0.0:
    return image
  height, width, _ = image.shape
  k_apply, k_area, k_aspect, k_top, k_left, k_noise = jax.random.split(key, 6)
  share = jax.random.uniform(k_area, (attempts,), minval=area[0], maxval=area[1])
  log_ratio = jax.random.uniform(
    k_aspect, (attempts,), minval=math.log(aspect[0]), maxval=math.log(aspect[1])
  )
  target = share * height * width
  ratio = jnp.exp(log_ratio)
  h = jnp.round(jnp.sqrt(target * ratio)).astype(jnp.int32)
  w = jnp.round(jnp.sqrt(target / ratio)).astype(jnp.int32)
  fits = (h < height) & (w < width)
  first = jnp.argmax(fits)  # The first try that fits (0 if none does; `fits` then says so).
  h, w = h[first], w[first]
  # Uniform corner, as timm's randint(0, side - box) (inclusive of its upper end).
  top = jnp.floor(jax.random.uniform(k_top) * (height - h + 1)).astype(jnp.int32)
  left = jnp.floor(jax.random.uniform(k_left) * (width - w + 1)).astype(jnp.int32)
  erase = box_mask(height, width, top, left, h, w) & fits[first]
  erase = erase & (jax.random.uniform(k_apply) < prob)
  noise = jax.random.normal(k_noise, image.shape, jnp.float32).astype(image.dtype)
  return jnp.where(erase[:, :, None], noise, image)
