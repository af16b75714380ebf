"""Heuristic token pruners. A pruner is a per-token score (higher = keep) plus a static per-layer budget.

Scores are pure functions `(layer, tokens, keep_mask, stats, key) -> (B, N)` of what the model already computed
(`models.vit.TokenStats`), so scoring costs no second pass. Budgets are Python ints (tokens kept after each layer,
CLS included) so compact mode can gather into fixed capacities under `jit`.

- `none`: keeps everything.
- `cls_attention` (seed 002 §1.1): attention from CLS, averaged over heads, with the keep_ratio schedule.
- `mean_attention` (seed 002 §1.2): mean attention a token receives from the other kept patches, same schedule.
- `similarity`: drops the most redundant tokens first; redundancy = highest cosine similarity to another kept
  patch token. Same schedule.
- `random` (seed 000's baseline): uniform scores from the PRNG key, same counts as the schedule.
- `greedy` (seed 000's baseline, our exact rule): one shot at the first pruning point (after block 0), keep the
  top-k by CLS attention and never prune again; k is the largest count whose GFLOPs do not exceed the schedule's,
  so greedy is compared with the schedule at (nearly) the same compute.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vitprune_jax.models.vit import TokenStats, ViTConfig
from vitprune_jax.pruning import flops, schedules

Array = jax.Array
ScoreFn = Callable[[int, Array, Array, TokenStats, Array], Array]

PRUNERS = ('none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity')


@dataclasses.dataclass(frozen=True)
class Pruner:
  name: str
  score_fn: Optional[ScoreFn]  # None = keep everything.
  budget: tuple[int, ...]  # Tokens (CLS included) kept after each layer: the static capacity.
  # Learned policies decide per image: a token scoring below the threshold is dropped even if the capacity
  # has room (it then stays masked inside the capacity). None = fill the capacity.
  threshold: Optional[float] = None


def cls_attention_score(layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array) -> Array:
  del layer, x, keep_mask, key
  return stats.cls_attention


def mean_attention_score(layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array) -> Array:
  del layer, x, keep_mask, key
  return stats.mean_attention


def similarity_score(layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array) -> Array:
  """Minus the highest cosine similarity to another kept patch token: near-duplicates score lowest."""
  del layer, stats, key
  x = x.astype(jnp.float32)
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  sim = jnp.einsum('bnd,bmd->bnm', xn, xn)
  n = x.shape[1]
  others = (keep_mask[:, None, :] > 0) & ~jnp.eye(n, dtype=bool)[None] & (jnp.arange(n) > 0)[None, None, :]
  redundancy = jnp.max(jnp.where(others, sim, -1.0), axis=-1)
  return -redundancy


def random_score(layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array) -> Array:
  del x, stats
  return jax.random.uniform(jax.random.fold_in(key, layer), keep_mask.shape)


_SCORES = {'cls_attention': cls_attention_score, 'mean_attention': mean_attention_score,
           'similarity': similarity_score, 'random': random_score}


def matched_one_shot_keep(cfg: ViTConfig, budget: list[int]) -> int:
  """Largest constant token count after block 0 whose GFLOPs stay within those of `budget`."""
  target = flops.vit_flops(cfg, budget)
  best = 2
  for keep in range(2, cfg.num_tokens + 1):
    if flops.vit_flops(cfg, schedules.constant_after_first(cfg.num_tokens, cfg.num_layers, keep)) <= target:
      best = keep
  return best


def make_pruner(name: str, cfg: ViTConfig, *, r_max: float, alpha: float) -> Pruner:
  """Builds a named pruner for a model geometry and seed 002's (r_max, alpha) schedule."""
  if name not in PRUNERS:
    from vitprune_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'Unknown pruner {name!r}; choose from: {", ".join(PRUNERS)}.')
  if name == 'none':
    return Pruner(name, None, tuple(schedules.unpruned(cfg.num_tokens, cfg.num_layers)))
  budget = schedules.tokens_per_layer(cfg.num_patches, cfg.num_layers, r_max, alpha)
  if name == 'greedy':
    keep = matched_one_shot_keep(cfg, budget)
    return Pruner(name, cls_attention_score,
                  tuple(schedules.constant_after_first(cfg.num_tokens, cfg.num_layers, keep)))
  return Pruner(name, _SCORES[name], tuple(budget))
