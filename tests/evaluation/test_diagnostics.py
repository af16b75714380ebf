"""Diagnostics: the background share by hand, and the tracing of merged patches."""

import jax
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.evaluation import diagnostics, visualize
from vitprune_jax.models import vit

CFG = vit.ViTConfig(10, 4, 2, 8, 2, 2, 16, num_channels=1)  # 4 patches of 2x2 + CLS.


def test_background_share_by_hand():
  image = np.full((1, 4, 4, 1), -1.0)  # Background at the minimum, -1.
  image[0, 0, 2, 0] = 0.5  # One pixel in patch 1 (top right).
  image[0, 3, 0, 0] = 2.0  # One in patch 2 (bottom left).
  assert diagnostics.background_patches(image, CFG).tolist() == [[True, False, False, True]]
  # After layer 0 all 4 patches kept (2 background); after layer 1 patches 1 and 3 (1 background).
  masks = np.array([[[1, 1, 1, 1, 1], [1, 0, 1, 0, 1]]])
  share = diagnostics.background_share(image, masks, CFG)
  assert share['kept_background_share'] == pytest.approx([0.5, 0.5])
  masks = np.array([[[1, 1, 1, 1, 1], [1, 1, 0, 0, 1]]])  # Patches 0 and 3: both background.
  assert diagnostics.background_share(image, masks, CFG)['kept_background_share'][1] == 1.0
  assert diagnostics.background_share(image, masks, CFG)['background_share'] == 0.5


def test_merged_sources_follow_every_patch_into_its_token():
  cfg = vit.ViTConfig(10, 8, 2, 16, 3, 2, 32, num_channels=1)  # 16 patches + CLS.
  model = vit.VisionTransformer(cfg)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(1), images)['params']
  for pruner in (
    pruning.make_pruner('tome', cfg, r=4),
    pruning.make_pruner('evit', cfg, keep_rate=0.5, layers=(1,)),
  ):
    sources = visualize.merged_sources(model, params, images, pruner)  # (B, L, N, P)
    member = sources > 0
    assert sources.shape == (2, 3, 17, 16)
    # Every patch is in exactly one token after every block, never in CLS.
    np.testing.assert_array_equal(member.sum(axis=2), 1)
    assert not member[:, :, 0].any()
    # The tokens that hold patches are the tokens that ran: the pruner's counts minus CLS.
    np.testing.assert_array_equal(member.any(axis=3).sum(axis=2), [np.array(pruner.budget) - 1] * 2)
