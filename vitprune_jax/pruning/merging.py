"""Token merging (ToMe) and fusion (EViT) with static shapes, for `vit.TokenMerger`.

Both run between the attention and the MLP of a block, as their reference code does. Each step is
written for one image and `vmap`-ed over the batch.

ToMe (Bolya et al., ICLR 2023; facebookresearch/ToMe `tome/merge.py`, `tome/patch/timm.py`): in
every block, r tokens merge away by bipartite soft matching on the keys averaged over heads:
tokens alternate into sets A (even positions, CLS included) and B (odd positions). Each A token's
best B match by cosine similarity is its edge, and the r A tokens with the most similar edges merge
into their B match. The class token never merges (its edges score -inf). Merges are size-weighted
averages, sizes are carried through the blocks, and proportional attention adds log(size) to the
attention logits. The tokens then come in the order [unmerged A tokens by position (CLS first),
every B token], as in `merge.py`. r is capped at half the patch tokens, as there.

Steered ToMe (ours; no peer's code): the same matching and merge, with a per-token score of any
scorer (a heuristic or a learned policy; higher = more important) as a penalty against merging:
the score, standardised over the image's patch tokens and times `weight`, is subtracted from the
edge scores of the A token that would merge away and of the B token it would merge into. The
scorer sees the block's tokens where ToMe merges them, after the attention. Weight 0 is ToMe
exactly.

Drop-merge (ours; no peer's code): any scoring pruner, learned or not, keeps its top-k tokens
after a block as it would when dropping, and every other valid token merges into the kept patch
token most similar to it (cosine on ToMe's metric, the block's keys averaged over heads), as a
size-weighted average; sizes are carried and proportional attention is on, as in ToMe. CLS never
merges and never receives. So the selection stays the pruner's, and nothing it drops is lost.

EViT (Liang et al., ICLR 2022; youweiliang/evit): at chosen blocks, keep the top
ceil(keep_rate * (N - 1)) patch tokens by CLS attention (averaged over heads) and fuse the rest into
one token, their sum weighted by that attention (`extra_token` in its code; the weights are the raw
attention, so the fused token is not normalised). No sizes, no proportional attention.
"""

import math
from collections.abc import Sequence
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vitprune_jax.models.vit import TokenStats

Array = jax.Array


def tome_r_per_layer(num_tokens: int, num_layers: int, r: int) -> list[int]:
  """Tokens merged away in each block: r, capped at half the remaining patches (ToMe's rule)."""
  merged, n = [], num_tokens
  for _ in range(num_layers):
    step = max(0, min(int(r), (n - 1) // 2))
    merged.append(step)
    n -= step
  return merged


def tome_counts(num_tokens: int, num_layers: int, r: int) -> list[int]:
  """Tokens (CLS included) after each block with ToMe at r."""
  counts, n = [], num_tokens
  for step in tome_r_per_layer(num_tokens, num_layers, r):
    n -= step
    counts.append(n)
  return counts


def bipartite_soft_matching(
  metric: Array, r: int, protect: Optional[Array] = None
) -> tuple[Array, Array, Array]:
  """ToMe's matching for one image: metric (N, C) -> (unm_idx, src_idx, dst_idx).

  unm_idx (N_A - r,): the A tokens kept, sorted by position (CLS first); src_idx (r,): the A tokens
  merged, most similar edge first; dst_idx (r,): the B token each merges into. Indices are within
  A (even positions) and B (odd positions). protect (N,), optional (steered ToMe): each token's
  penalty, subtracted from the score of every edge it is an end of.
  """
  metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
  a, b = metric[::2], metric[1::2]
  scores = a @ b.T
  if protect is not None:
    scores = scores - protect[::2][:, None] - protect[1::2][None, :]
  scores = scores.at[0, :].set(-jnp.inf)  # The class token never merges.
  node_max, node_idx = jnp.max(scores, axis=-1), jnp.argmax(scores, axis=-1)
  edge_idx = jnp.argsort(-node_max, stable=True)
  unm_idx, src_idx = jnp.sort(edge_idx[r:]), edge_idx[:r]
  return unm_idx, src_idx, node_idx[src_idx]


def merge_weighted(
  x: Array, size: Array, unm_idx: Array, src_idx: Array, dst_idx: Array
) -> tuple[Array, Array]:
  """Size-weighted average merge of one image: x (N, D), size (N,) -> (N - r, D), (N - r,).

  ToMe's `merge_wavg`: x * size and size are summed into the destinations, then divided.
  """
  weighted = x * size[:, None]
  src, dst = weighted[::2], weighted[1::2]
  size_a, size_b = size[::2], size[1::2]
  dst = dst.at[dst_idx].add(src[src_idx])
  size_b = size_b.at[dst_idx].add(size_a[src_idx])
  merged_size = jnp.concatenate([size_a[unm_idx], size_b])
  merged = jnp.concatenate([src[unm_idx], dst], axis=0) / merged_size[:, None]
  return merged, merged_size


def merge_sources(source: Array, unm_idx: Array, src_idx: Array, dst_idx: Array) -> Array:
  """Which original patches each token holds, (N, N0) 0/1, through one merge (ToMe's
  `merge_source`, mode amax): for the visualisation of what merged into what."""
  a, b = source[::2], source[1::2]
  b = b.at[dst_idx].max(a[src_idx])
  return jnp.concatenate([a[unm_idx], b], axis=0)


def standardised_penalty(score: Array, weight: float) -> Array:
  """Steered ToMe's penalty for one image: score (N,) -> weight * the score standardised over the
  patch tokens (mean 0, standard deviation 1; a constant score gives 0), 0 for CLS."""
  patches = score[1:].astype(jnp.float32)
  z = (patches - jnp.mean(patches)) / (jnp.std(patches) + 1e-6)
  return jnp.concatenate([jnp.zeros((1,), jnp.float32), weight * z])


def tome_merge(
  r_per_layer: Sequence[int],
  steer: Optional[Callable[..., Array]] = None,
  weight: float = 0.0,
  key: Optional[Array] = None,
  width: Optional[int] = None,
):
  """The `TokenMerger.merge` of ToMe with `r_per_layer[l]` merges in block l; with `steer` (a
  pruner's score function, called with `key`, default PRNGKey(0), on the first `width` features
  of the tokens: the model's width, as `evaluation.visualize` appends columns to trace sources)
  steered ToMe at `weight`."""
  key = jax.random.PRNGKey(0) if key is None else key

  def merge(layer: int, x: Array, keep_mask: Array, size: Array, metric: Array, stats: TokenStats):
    r = int(r_per_layer[layer])
    if r == 0:
      return x, keep_mask, size
    if steer is None:
      protect = jnp.zeros(x.shape[:2], jnp.float32)
    else:
      score = steer(layer, x[..., :width], keep_mask, stats, key)
      protect = jax.vmap(lambda s: standardised_penalty(s, weight))(score)

    def one(x, size, metric, protect):
      unm, src, dst = bipartite_soft_matching(metric, r, None if steer is None else protect)
      return merge_weighted(x.astype(jnp.float32), size, unm, src, dst)

    merged, new_size = jax.vmap(one)(x, size, metric, protect)
    ones = jnp.ones(merged.shape[:2], keep_mask.dtype)
    return merged.astype(x.dtype), ones, new_size

  return merge


def _merge_into_nearest(
  x: Array, size: Array, weight: Array, metric: Array, targets: Array, receives: Array
) -> tuple[Array, Array]:
  """x (N, D), size (N,), merge weights (N,), metric (N, C), target indices (k,) into x, receives
  (k,) -> (k, D), (k,): each token with weight w > 0 adds w * x and w to the receiving target with
  the highest cosine similarity to it; the targets' sums are then divided by their sizes."""
  metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
  similarity = jnp.where(receives[None, :], metric @ metric[targets].T, -jnp.inf)
  dst = jnp.argmax(similarity, axis=-1)  # (N,): the target each would merge into.
  merged_size = size[targets].at[dst].add(weight)
  total = (x[targets] * size[targets][:, None]).at[dst].add(x * weight[:, None])
  return total / merged_size[:, None], merged_size


def merge_into_kept(
  x: Array, size: Array, keep_mask: Array, metric: Array, idx: Array
) -> tuple[Array, Array]:
  """Drop-merge for one image: x (N, D), size (N,), keep_mask (N,), metric (N, C) and the kept
  tokens idx (k,) (CLS first, as `execution.select_top_k` gives them) -> (k, D), (k,).

  Each valid token not in idx adds size * x and its size to the kept patch token (a valid one,
  not CLS) with the highest cosine similarity to it; the sums are then divided by the sizes.
  Needs k >= 2 (a patch to merge into).
  """
  dropped = jnp.ones((x.shape[0],), bool).at[idx].set(False)
  weight = jnp.where(dropped & (keep_mask > 0), size, 0.0)
  receives = (keep_mask[idx] > 0).at[0].set(False)
  return _merge_into_nearest(x, size, weight, metric, idx, receives)


def merge_in_place(
  x: Array, size: Array, dropped: Array, receives: Array, metric: Array
) -> tuple[Array, Array]:
  """Drop-merge in mask execution for one image: x (N, D), size (N,), bool masks dropped (N,)
  (the tokens that merge away) and receives (N,) (the kept patch tokens they may merge into),
  metric (N, C) -> (x, size) with the same N.

  The tokens stay in place: each receiving token becomes the size-weighted average of itself and
  the dropped tokens most similar to it (`merge_into_kept` then gathers the same values); the rest
  are unchanged (the dropped ones are masked by the caller).
  """
  everyone = jnp.arange(x.shape[0])
  return _merge_into_nearest(x, size, jnp.where(dropped, size, 0.0), metric, everyone, receives)


def evit_keep(num_tokens: int, keep_rate: float) -> int:
  """Patch tokens EViT keeps out of num_tokens - 1: ceil(keep_rate * (N - 1))."""
  return max(1, min(num_tokens - 1, math.ceil(keep_rate * (num_tokens - 1) - 1e-9)))


def evit_counts(num_tokens: int, num_layers: int, keep_rate: float, layers: Sequence[int]):
  """Tokens (CLS included) after each block with EViT: at each of `layers`, CLS + the kept patch
  tokens + the fused one."""
  counts, n = [], num_tokens
  for layer in range(num_layers):
    if layer in layers and keep_rate < 1.0:
      kept = evit_keep(n, keep_rate)
      n = 1 + kept + (1 if kept < n - 1 else 0)
    counts.append(n)
  return counts


def evit_fuse_one(x: Array, cls_attention: Array, keep: int) -> Array:
  """EViT for one image: x (N, D), CLS attention (N,) -> (1 + keep + 1, D): CLS, the top `keep`
  patches by CLS attention (by position), their complement fused by attention weight."""
  n = x.shape[0]
  patch_attention = cls_attention[1:]
  order = jnp.argsort(-patch_attention, stable=True)
  top, rest = jnp.sort(order[:keep]), order[keep:]
  fused = jnp.sum(x[1:][rest] * patch_attention[rest][:, None], axis=0, keepdims=True)
  parts = [x[:1], x[1:][top]] + ([fused] if keep < n - 1 else [])
  return jnp.concatenate(parts, axis=0)


def evit_merge(keep_rate: float, layers: Sequence[int]):
  """The `TokenMerger.merge` of EViT at `keep_rate` after the attention of each of `layers`."""
  layers = tuple(int(v) for v in layers)

  def merge(layer: int, x: Array, keep_mask: Array, size: Array, metric: Array, stats: TokenStats):
    del metric
    if layer not in layers or keep_rate >= 1.0:
      return x, keep_mask, size
    keep = evit_keep(x.shape[1], keep_rate)
    fused = jax.vmap(lambda xi, ai: evit_fuse_one(xi, ai, keep))(x, stats.cls_attention)
    ones = jnp.ones(fused.shape[:2], keep_mask.dtype)
    return fused, ones, ones.astype(jnp.float32)

  return merge


def default_evit_layers(num_layers: int) -> tuple[int, ...]:
  """EViT's locations scaled to the depth: blocks 3, 6, 9 of 12 (L/4, L/2, 3L/4)."""
  return tuple(sorted({num_layers // 4, num_layers // 2, (3 * num_layers) // 4}))
