"""The two static-shape execution modes of a pruner, as `token_selector`s for `models.vit.VisionTransformer`.

- mask: the keep mask changes, shapes never do; dropped tokens stop being keys and stop updating. For training
  and RL rollouts, where decisions differ per image. Saves no compute.
- compact: the kept tokens (CLS first, then in their original order) are gathered into the layer's static
  capacity, so later blocks run on fewer tokens: this is where wall-clock speedup comes from. If fewer tokens
  are valid than the capacity holds, the rest stay masked inside it.

For the same decisions both modes give the same logits (tested to 1e-5 in fp32).
"""
from typing import Optional

import jax
import jax.numpy as jnp

from vitprune_jax.models.vit import TokenSelector, TokenStats
from vitprune_jax.pruning.pruners import Pruner

Array = jax.Array
MODES = ('mask', 'compact')


def select_top_k(scores: Array, keep_mask: Array, k: int) -> Array:
  """Indices (B, k) of the k best tokens, CLS always first, dropped tokens last; sorted by position."""
  scores = jnp.where(keep_mask > 0, scores.astype(jnp.float32), -jnp.inf)
  scores = scores.at[:, 0].set(jnp.inf)
  _, idx = jax.lax.top_k(scores, k)
  return jnp.sort(idx, axis=-1)


def apply_selection(x: Array, keep_mask: Array, idx: Array, mode: str) -> tuple[Array, Array]:
  if mode == 'mask':
    chosen = jnp.zeros_like(keep_mask).at[jnp.arange(idx.shape[0])[:, None], idx].set(1.0)
    return x, chosen * keep_mask
  return (jnp.take_along_axis(x, idx[..., None], axis=1), jnp.take_along_axis(keep_mask, idx, axis=1))


def make_selector(pruner: Pruner, *, mode: str, rng: Optional[Array] = None) -> Optional[TokenSelector]:
  """A token_selector applying `pruner` after every block; None when the pruner keeps everything."""
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if pruner.score_fn is None:
    return None
  key = jax.random.PRNGKey(0) if rng is None else rng

  def selector(layer: int, x: Array, keep_mask: Array, stats: TokenStats) -> tuple[Array, Array]:
    k = min(pruner.budget[layer], x.shape[1])
    if k == x.shape[1] and pruner.threshold is None:
      return x, keep_mask
    scores = pruner.score_fn(layer, x, keep_mask, stats, key)
    if pruner.threshold is not None:
      keep_mask = keep_mask * (scores >= pruner.threshold).at[:, 0].set(True)
      if k == x.shape[1]:
        return x, keep_mask
    return apply_selection(x, keep_mask, select_top_k(scores, keep_mask, k), mode)

  return selector
