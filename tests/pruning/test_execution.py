"""Mask and compact execution are the same computation for the same decisions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.models import vit
from vitprune_jax.models.vit import TokenStats
from vitprune_jax.pruning.pruners import Pruner

CFG = vit.ViTConfig(
  num_classes=10,
  image_size=16,
  patch_size=2,
  hidden_size=32,
  num_layers=4,
  num_heads=4,
  mlp_dim=64,
  num_channels=1,
)


@pytest.mark.parametrize('name', ['cls_attention', 'mean_attention', 'similarity', 'greedy'])
def test_mask_and_compact_give_the_same_logits(name):
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  params = dict(
    params, head=dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (32, 10)), bias=jnp.zeros(10))
  )
  pruner = pruning.make_pruner(name, CFG, r_max=0.8, alpha=1.0)
  out = {}
  for execution in pruning.EXECUTIONS:
    selector = pruning.make_selector(pruner, execution=execution)
    fn = jax.jit(lambda p, x, s=selector: model.apply({'params': p}, x, token_selector=s))
    out[execution] = fn(params, images)
  np.testing.assert_allclose(out['mask'][0], out['compact'][0], atol=1e-5, rtol=1e-5)
  unpruned, _ = model.apply({'params': params}, images)
  assert not np.allclose(unpruned, out['compact'][0], atol=1e-3)  # Pruning did change something.
  for a, b in zip(out['mask'][1].kept, out['compact'][1].kept):
    np.testing.assert_array_equal(a, b)


def test_unknown_execution():
  with pytest.raises(ValueError, match="execution must be one of \\('mask', 'compact'\\)"):
    pruning.make_selector(
      pruning.make_pruner('random', CFG, r_max=0.5, alpha=1.0), execution='fast'
    )


def test_threshold_drops_low_scores_inside_the_capacity():
  """A learned policy's 'prune' votes are honoured even when the capacity has room for more."""
  scores = jnp.array([[0.0, 2.0, -1.0, 3.0, -2.0, 1.0]])
  pruner = Pruner('votes', lambda *_: scores, (4,), threshold=0.0)
  stats = TokenStats(jnp.zeros((1, 6)), jnp.zeros((1, 6)))
  x = jnp.arange(6.0)[None, :, None]
  for execution in pruning.EXECUTIONS:
    selector = pruning.make_selector(pruner, execution=execution)
    new_x, mask = selector(0, x, jnp.ones((1, 6)), stats)
    if execution == 'mask':
      np.testing.assert_array_equal(mask, [[1, 1, 0, 1, 0, 1]])
    else:  # Capacity 4: CLS and the three best (1, 3, 5); all pass the threshold.
      np.testing.assert_array_equal(new_x[0, :, 0], [0, 1, 3, 5])
      np.testing.assert_array_equal(mask, [[1, 1, 1, 1]])
  # Capacity >= N: mask only, no gather.
  tight = Pruner('votes', lambda *_: scores, (6,), threshold=2.5)
  new_x, mask = pruning.make_selector(tight, execution='compact')(0, x, jnp.ones((1, 6)), stats)
  assert new_x.shape == x.shape
  np.testing.assert_array_equal(mask, [[1, 0, 0, 1, 0, 0]])
