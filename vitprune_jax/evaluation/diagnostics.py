"""Why a pruner keeps what it keeps: the share of its kept patches that are background.

A patch is background when every pixel in it equals the image's minimum (Fashion-MNIST and digits
have a flat background, at the minimum after normalisation). `background_share` takes the keep
masks of `visualize.kept_masks` and gives, per layer, the share of the kept patch tokens that are
background, next to the share of background patches in the images (what random keeps on average).
"""

from typing import Any

import numpy as np

from vitprune_jax.models import vit


def background_patches(images: np.ndarray, vit_cfg: vit.ViTConfig, tol: float = 1e-6) -> np.ndarray:
  """(B, P) bool: patches whose pixels all equal the image's minimum, in token order (row-major)."""
  b, h, w, c = images.shape
  p = vit_cfg.patch_size
  patches = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  patches = patches.reshape(b, (h // p) * (w // p), -1)
  low = images.reshape(b, -1).min(axis=1)[:, None, None]
  return np.all(np.abs(patches - low) <= tol, axis=-1)


def background_share(
  images: np.ndarray, masks: np.ndarray, vit_cfg: vit.ViTConfig
) -> dict[str, Any]:
  """Share of the kept patches that are background after each layer (masks (B, L, N), CLS at 0),
  and the share of background among all patches."""
  background = background_patches(np.asarray(images), vit_cfg)  # (B, P)
  kept = np.asarray(masks)[:, :, 1:] > 0  # (B, L, P)
  kept_background = (kept & background[:, None, :]).sum(axis=(0, 2))
  return {
    'kept_background_share': [float(v) for v in kept_background / kept.sum(axis=(0, 2))],
    'background_share': float(background.mean()),
  }
