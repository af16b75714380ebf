"""Mask mode and compact mode are the same computation for the same decisions."""
import jax
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.models import vit

CFG = vit.ViTConfig(num_classes=10, image_size=16, patch_size=2, hidden_size=32, num_layers=4, num_heads=4,
                    mlp_dim=64, num_channels=1)


@pytest.mark.parametrize('name', ['cls_attention', 'mean_attention', 'similarity', 'greedy'])
def test_mask_and_compact_give_the_same_logits(name):
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  params = dict(params, head=dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (32, 10)),
                                  bias=jax.numpy.zeros(10)))
  pruner = pruning.make_pruner(name, CFG, r_max=0.8, alpha=1.0)
  out = {}
  for mode in pruning.MODES:
    fn = jax.jit(lambda p, x: model.apply({'params': p}, x, token_selector=pruning.make_selector(pruner, mode=mode)))
    out[mode] = fn(params, images)
  np.testing.assert_allclose(out['mask'][0], out['compact'][0], atol=1e-5, rtol=1e-5)
  unpruned, _ = model.apply({'params': params}, images)
  assert not np.allclose(unpruned, out['compact'][0], atol=1e-3)  # Pruning did change something.
  for a, b in zip(out['mask'][1].kept, out['compact'][1].kept):
    np.testing.assert_array_equal(a, b)


def test_unknown_mode():
  with pytest.raises(ValueError):
    pruning.make_selector(pruning.make_pruner('random', CFG, r_max=0.5, alpha=1.0), mode='fast')
