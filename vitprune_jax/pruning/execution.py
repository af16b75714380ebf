"""The two static-shape executions of a pruner, as `token_selector`s for `vit.VisionTransformer`.

- mask: the keep mask changes, shapes never do; dropped tokens stop being keys and stop updating.
  For training and RL rollouts, where decisions differ per image. Saves no compute.
- compact: the kept tokens (CLS first, then in their original order) are gathered into the layer's
  static capacity, so later blocks run on fewer tokens: this is where wall-clock speedup comes
  from. If fewer tokens are valid than the capacity holds, the rest stay masked inside it.

For the same decisions both executions give the same logits (tested to 1e-5 in fp32).
"""

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from vitprune_jax.models.vit import TokenMerger, TokenSelector, TokenStats, VisionTransformer
from vitprune_jax.pruning import merging
from vitprune_jax.pruning.pruners import Pruner

Array = jax.Array
EXECUTIONS = ('mask', 'compact')


def select_top_k(scores: Array, keep_mask: Array, k: int) -> Array:
  """Indices (B, k) of the k best tokens, CLS always first, dropped tokens last; by position."""
  scores = jnp.where(keep_mask > 0, scores.astype(jnp.float32), -jnp.inf)
  scores = scores.at[:, 0].set(jnp.inf)
  _, idx = jax.lax.top_k(scores, k)
  return jnp.sort(idx, axis=-1)


def apply_selection(x: Array, keep_mask: Array, idx: Array, execution: str) -> tuple[Array, Array]:
  """Keeps the tokens `idx`: by masking the others (mask) or by gathering them (compact)."""
  if execution == 'mask':
    chosen = jnp.zeros_like(keep_mask).at[jnp.arange(idx.shape[0])[:, None], idx].set(1.0)
    return x, chosen * keep_mask
  return (
    jnp.take_along_axis(x, idx[..., None], axis=1),
    jnp.take_along_axis(keep_mask, idx, axis=1),
  )


def make_selector(
  pruner: Pruner, *, execution: str, rng: Optional[Array] = None
) -> Optional[TokenSelector]:
  """A token_selector applying `pruner` after every block; None when the pruner keeps everything."""
  if execution not in EXECUTIONS:
    raise ValueError(f'execution must be one of {EXECUTIONS}, got {execution!r}')
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
    return apply_selection(x, keep_mask, select_top_k(scores, keep_mask, k), execution)

  return selector


def drop_merger(pruner: Pruner, *, rng: Optional[Array] = None) -> TokenMerger:
  """The `TokenMerger` (after each block) of a drop-merge pruner (`pruners.with_merging`): its
  top-k of the layer's capacity are kept (`select_top_k`) and the rest merge into them
  (`merging.merge_into_kept`); sizes carried, proportional attention on. Always gathers."""
  key = jax.random.PRNGKey(0) if rng is None else rng

  def merge(layer: int, x: Array, keep_mask: Array, size: Array, metric: Array, stats: TokenStats):
    k = min(pruner.budget[layer], x.shape[1])
    if k == x.shape[1]:
      return x, keep_mask, size
    idx = select_top_k(pruner.score_fn(layer, x, keep_mask, stats, key), keep_mask, k)
    merged, new_size = jax.vmap(merging.merge_into_kept)(
      x.astype(jnp.float32), size, keep_mask, metric.astype(jnp.float32), idx
    )
    return merged.astype(x.dtype), jnp.take_along_axis(keep_mask, idx, axis=1), new_size

  return TokenMerger(merge, proportional_attention=True, kind='drop_merge', after_block=True)


def model_hooks(
  pruner: Optional[Pruner], *, execution: str, rng: Optional[Array] = None
) -> dict[str, Any]:
  """The keyword arguments of `model.apply` that run `pruner`: its token_selector (scoring
  pruners), token_merger (ToMe, EViT, drop-merge: merging always gathers, whatever the
  execution) and the statistics it reads (only those are computed). None: the unpruned model, no
  statistics."""
  if pruner is None:
    return {'statistics': ()}
  if pruner.merge_dropped:
    return {
      'token_merger': drop_merger(pruner, rng=rng),
      'statistics': pruner.statistics,
    }
  return {
    'token_selector': make_selector(pruner, execution=execution, rng=rng),
    'token_merger': pruner.merger,
    'statistics': pruner.statistics,
  }


@functools.lru_cache(maxsize=64)
def _jitted_forward(model: VisionTransformer, pruner: Optional[Pruner], execution: str):
  def fn(params, images, rng):
    hooks = model_hooks(pruner, execution=execution, rng=rng)
    logits, aux = model.apply({'params': params}, images, **hooks)
    return logits, jnp.stack(aux.kept, axis=1)

  return jax.jit(fn)


def forward(
  model: VisionTransformer,
  params: Any,
  images: Array,
  pruner: Optional[Pruner] = None,
  *,
  execution: str = 'compact',
  rng: Optional[Array] = None,
) -> tuple[Array, Array]:
  """Inference of `model` on a batch, pruned by `pruner` (None: unpruned); jitted once per setting.

  Args:
    model: the ViT (e.g. from `models.load_vit`).
    params: its params.
    images: (B, H, W, C) float32, as the data pipeline feeds them.
    pruner: from `make_pruner(name, model.config, **options)`, or a learned policy's pruner.
    execution: 'compact' (kept tokens gathered: real speedup) or 'mask' (same logits, no speedup).
    rng: key for stochastic pruners (random); default PRNGKey(0).

  Returns:
    logits (B, classes) float32 and the tokens (CLS included) kept after each block, (B, L).
  """
  if execution not in EXECUTIONS:
    raise ValueError(f'execution must be one of {EXECUTIONS}, got {execution!r}')
  rng = jax.random.PRNGKey(0) if rng is None else rng
  return _jitted_forward(model, pruner, execution)(params, images, rng)
