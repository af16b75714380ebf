"""How many tokens each layer keeps: seed 002's schedule and fixed budgets, as static ints.

The counts are static so that compact mode can gather into fixed per-layer capacities under `jit`.
"""

import math


def keep_ratio(layer: int, num_layers: int, r_max: float, alpha: float) -> float:
  """Seed 002: `keep_ratio(l) = 1 - r_max * ((l + 1) / L) ** alpha`: little early, much late."""
  return 1.0 - r_max * ((layer + 1) / num_layers) ** alpha


def tokens_per_layer(num_patches: int, num_layers: int, r_max: float, alpha: float) -> list[int]:
  """Tokens (CLS included) left after each layer: its ratio of the remaining patches, floored.

  `tokens_per_layer(144, 8, 0.6, 2.0) == [143, 137, 125, 106, 81, 54, 29, 12]` (seed 002's printed
  list). At least one patch is always kept.
  """
  if not 0.0 <= r_max <= 1.0:
    raise ValueError(f'r_max must be in [0, 1], got {r_max}.')
  if alpha <= 0:
    raise ValueError(f'alpha must be positive, got {alpha}.')
  counts, patches = [], num_patches
  for layer in range(num_layers):
    # The epsilon keeps exact products (e.g. 100 * 0.5) from flooring one short in binary floats.
    patches = max(1, math.floor(patches * keep_ratio(layer, num_layers, r_max, alpha) + 1e-9))
    counts.append(patches + 1)
  return counts


def constant_after_first(num_tokens: int, num_layers: int, keep: int) -> list[int]:
  """One-shot budget: `keep` tokens (CLS included) from the first pruning point on."""
  return [max(2, min(keep, num_tokens))] * num_layers


def unpruned(num_tokens: int, num_layers: int) -> list[int]:
  return [num_tokens] * num_layers
