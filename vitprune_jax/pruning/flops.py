"""Analytic FLOPs of a ViT forward pass driven by the tokens each block really sees.

Convention: 1 multiply-add = 2 FLOPs (as XLA's cost analysis counts a dot). Counted: patch
embedding, per block the q/k/v/out projections, the two N^2 attention products (scores and weighted
sum), the MLP, and the head; plus the elementwise work XLA also counts, at its per-element costs on
CPU: exact (erf) GELU 64 (tanh-approximated, as imported JAX checkpoints use: 8), masked softmax 5,
LayerNorm 5. Not counted: bias and residual adds and token scoring (about 1 %). A test checks the
total against XLA's cost analysis of the compiled compact-mode forward.
"""

from collections.abc import Sequence

from vitprune_jax.models.vit import ViTConfig

GELU_FLOPS = 64  # Per element, as XLA counts jax.nn.gelu(approximate=False).
GELU_TANH_FLOPS = 8  # Per element, jax.nn.gelu(approximate=True).
SOFTMAX_FLOPS = 5  # Per attention score: mask select, max, sub, exp, sum/div.
LAYERNORM_FLOPS = 5  # Per element.


def block_flops(cfg: ViTConfig, n: float) -> float:
  d, m, h = cfg.hidden_size, cfg.mlp_dim, cfg.num_heads
  macs = 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
  gelu = GELU_TANH_FLOPS if cfg.gelu_approximate else GELU_FLOPS
  elementwise = gelu * n * m + SOFTMAX_FLOPS * h * n * n + 2 * LAYERNORM_FLOPS * n * d
  return 2.0 * macs + elementwise


def vit_flops(cfg: ViTConfig, tokens_after_layer: Sequence[float]) -> float:
  """FLOPs per image. `tokens_after_layer[l]` = tokens kept after block l (block l+1 runs on it).

  Block 0 always runs on every token; the count after the last block changes nothing (only CLS is
  read).
  """
  if len(tokens_after_layer) != cfg.num_layers:
    raise ValueError(f'need {cfg.num_layers} token counts, got {len(tokens_after_layer)}')
  embed = 2.0 * cfg.num_patches * cfg.patch_size**2 * cfg.num_channels * cfg.hidden_size
  entering = [cfg.num_tokens] + list(tokens_after_layer[:-1])
  head = 2.0 * cfg.hidden_size * cfg.num_classes
  return embed + sum(block_flops(cfg, n) for n in entering) + head


def gflops(cfg: ViTConfig, tokens_after_layer: Sequence[float]) -> float:
  return vit_flops(cfg, tokens_after_layer) / 1e9
