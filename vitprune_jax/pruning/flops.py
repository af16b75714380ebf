"""Analytic FLOPs of a ViT forward pass driven by the tokens each block really sees.

Convention: 1 multiply-add = 2 FLOPs (as XLA's cost analysis counts a dot). Counted: patch
embedding, per block the q/k/v/out projections, the two N^2 attention products (scores and weighted
sum), the MLP, and the head; plus the elementwise work XLA also counts, at its per-element costs on
CPU: exact (erf) GELU 64 (tanh-approximated, as imported JAX checkpoints use: 8), masked softmax 5,
LayerNorm 5. Not counted: bias and residual adds and token scoring (about 1 %). A test checks the
total against XLA's cost analysis of the compiled compact-mode forward.
"""

from collections.abc import Sequence
from typing import Optional

from vitprune_jax.models.vit import ViTConfig

GELU_FLOPS = 64  # Per element, as XLA counts jax.nn.gelu(approximate=False).
GELU_TANH_FLOPS = 8  # Per element, jax.nn.gelu(approximate=True).
SOFTMAX_FLOPS = 5  # Per attention score: mask select, max, sub, exp, sum/div.
LAYERNORM_FLOPS = 5  # Per element.


def attention_flops(cfg: ViTConfig, n: float) -> float:
  """LayerNorm, q/k/v/out projections, scores, softmax and weighted sum on n tokens."""
  d, h = cfg.hidden_size, cfg.num_heads
  return 2.0 * (4 * n * d * d + 2 * n * n * d) + SOFTMAX_FLOPS * h * n * n + LAYERNORM_FLOPS * n * d


def mlp_flops(cfg: ViTConfig, n: float) -> float:
  """LayerNorm and the MLP on n tokens."""
  d, m = cfg.hidden_size, cfg.mlp_dim
  gelu = GELU_TANH_FLOPS if cfg.gelu_approximate else GELU_FLOPS
  return 2.0 * 2 * n * d * m + gelu * n * m + LAYERNORM_FLOPS * n * d


def block_flops(cfg: ViTConfig, n: float) -> float:
  return attention_flops(cfg, n) + mlp_flops(cfg, n)


def merge_flops(cfg: ViTConfig, kind: str, n: float, out: float) -> float:
  """The cost of merging n tokens into `out` between attention and MLP.

  tome: keys averaged over heads (n d), proportional attention (h n^2 adds), normalising the
  metric (3 n hd), the A x B cosine scores (2 n_A n_B hd) and the size-weighted merge (3 n d).
  evit: the weighted sum of the fused tokens (2 (n - out) d).
  drop_merge (after the MLP): as tome, with the n x out cosine scores (2 n out hd).
  """
  d, h = cfg.hidden_size, cfg.num_heads
  hd = d // h
  if kind == 'tome':
    if out == n:
      return h * n * n + n * d
    a, b = (n + 1) // 2, n // 2
    return h * n * n + n * d + 3 * n * hd + 2.0 * a * b * hd + 3 * n * d
  if kind == 'evit':
    return 2.0 * max(n - out, 0) * d
  if kind == 'drop_merge':
    if out == n:
      return h * n * n + n * d
    return h * n * n + n * d + 3 * n * hd + 2.0 * n * out * hd + 3 * n * d
  raise ValueError(f'unknown merge kind {kind!r}')


def vit_flops(
  cfg: ViTConfig, tokens_after_layer: Sequence[float], merge: Optional[str] = None
) -> float:
  """FLOPs per image. `tokens_after_layer[l]` = tokens kept after block l (block l+1 runs on it).

  Block 0 always runs on every token; the count after the last block changes nothing (only CLS is
  read). With `merge` ('tome' or 'evit') the tokens merge inside each block, between attention
  (on the tokens entering) and MLP (on those after it), and the merge itself is priced too;
  'drop_merge' merges after the MLP, so the block runs on the tokens entering it, plus the merge.
  """
  if len(tokens_after_layer) != cfg.num_layers:
    raise ValueError(f'need {cfg.num_layers} token counts, got {len(tokens_after_layer)}')
  embed = 2.0 * cfg.num_patches * cfg.patch_size**2 * cfg.num_channels * cfg.hidden_size
  entering = [cfg.num_tokens] + list(tokens_after_layer[:-1])
  head = 2.0 * cfg.hidden_size * cfg.num_classes
  if merge is None:
    return embed + sum(block_flops(cfg, n) for n in entering) + head
  after = merge == 'drop_merge'
  blocks = sum(
    attention_flops(cfg, n) + merge_flops(cfg, merge, n, out) + mlp_flops(cfg, n if after else out)
    for n, out in zip(entering, tokens_after_layer)
  )
  return embed + blocks + head


def gflops(
  cfg: ViTConfig, tokens_after_layer: Sequence[float], merge: Optional[str] = None
) -> float:
  return vit_flops(cfg, tokens_after_layer, merge) / 1e9
