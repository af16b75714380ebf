"""The analytic FLOP counter against XLA's cost analysis of the compiled compact forward."""

import jax
import jax.numpy as jnp
import pytest

from vitprune_jax import pruning
from vitprune_jax.models import vit

CFG = vit.ViTConfig(
  num_classes=10,
  image_size=64,
  patch_size=8,
  hidden_size=192,
  num_layers=4,
  num_heads=3,
  mlp_dim=768,
  num_channels=3,
)  # 64 patches + CLS, matmul-heavy.


OPTIONS = {
  'none': {},
  'tome': {'r': 8},
  'evit': {'keep_rate': 0.5, 'layers': (1, 2)},
}


@pytest.mark.parametrize(
  'name',
  ['none', 'cls_attention', 'greedy', 'mean_attention', 'tome', 'evit', 'similarity+merge'],
)
def test_analytic_flops_match_xla_within_5_percent(name):
  model = vit.VisionTransformer(CFG)
  x = jnp.zeros((1, 64, 64, 3))
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))['params']
  base = name.removesuffix('+merge')
  pruner = pruning.make_pruner(base, CFG, **OPTIONS.get(base, {'r_max': 0.7, 'alpha': 1.0}))
  if name.endswith('+merge'):
    pruner = pruning.with_merging(pruner)
  hooks = pruning.model_hooks(pruner, execution='compact')
  compiled = jax.jit(lambda p, x: model.apply({'params': p}, x, **hooks)[0]).lower(params, x)
  cost = compiled.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  analytic = pruning.vit_flops(CFG, pruner.budget, pruner.merge_kind)
  assert analytic == pytest.approx(cost['flops'], rel=0.05)
  if name in ('tome', 'evit'):  # Merging really saves compute, and the counter sees it.
    assert analytic < 0.8 * pruning.vit_flops(CFG, [65] * 4)
  if name == 'similarity+merge':  # The merge costs more than dropping, and the counter sees it.
    assert analytic > pruning.vit_flops(CFG, pruner.budget)


def test_flops_fall_with_pruning_and_scale_with_tokens():
  full = pruning.vit_flops(CFG, [65] * 4)
  pruned = pruning.vit_flops(CFG, pruning.tokens_per_layer(64, 4, 0.7, 1.0))
  assert pruned < full
  # Only the blocks after the first see fewer tokens: block 0 is always full.
  assert pruning.vit_flops(CFG, [2] * 4) > full / 4
  with pytest.raises(ValueError):
    pruning.vit_flops(CFG, [65] * 3)
