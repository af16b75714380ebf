"""Token pruning: per-layer schedules, heuristic pruners, mask/compact execution, FLOP counting.

Build a pruner by name with `make_pruner(name, vit_cfg, **options)` (names: `PRUNERS`) and run it
with `model.apply(..., **model_hooks(pruner, execution='compact', rng=key))`
(or `execution='mask'`).
"""

from vitprune_jax.pruning.execution import EXECUTIONS, forward, make_selector, model_hooks
from vitprune_jax.pruning.flops import gflops, vit_flops
from vitprune_jax.pruning.pruners import (
  MERGERS,
  PRUNERS,
  STEERS,
  Pruner,
  at_capacities,
  make_pruner,
  pruner_options,
  steered_tome,
  with_merging,
)
from vitprune_jax.pruning.schedules import keep_ratio, tokens_per_layer

__all__ = [
  'EXECUTIONS',
  'MERGERS',
  'PRUNERS',
  'STEERS',
  'Pruner',
  'at_capacities',
  'forward',
  'gflops',
  'keep_ratio',
  'make_pruner',
  'make_selector',
  'model_hooks',
  'pruner_options',
  'steered_tome',
  'tokens_per_layer',
  'vit_flops',
  'with_merging',
]
