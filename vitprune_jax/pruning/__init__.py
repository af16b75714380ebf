"""Token pruning: per-layer schedules, heuristic pruners, mask/compact execution and FLOP counting."""
from vitprune_jax.pruning.execution import MODES, make_selector
from vitprune_jax.pruning.flops import gflops, vit_flops
from vitprune_jax.pruning.pruners import PRUNERS, Pruner, make_pruner
from vitprune_jax.pruning.schedules import keep_ratio, tokens_per_layer
