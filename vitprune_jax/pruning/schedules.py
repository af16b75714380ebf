"""How many tokens each layer keeps: seed 002's schedule, the literature's standard one and fixed
budgets, as static ints.

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


# The schedule EViT, DynamicViT and RL4EViT report on DeiT: keep 0.7, 0.49 and 0.343 of the patches
# after blocks 3, 6 and 9 (of 12, counted from 1), i.e. 0.7 ** t of them after the t-th point.
DEIT_STANDARD_RATE = 0.7
SCHEDULES = ('keep_ratio', 'deit_standard')  # Seed 002's formula | the literature's.


def deit_standard_points(num_layers: int) -> tuple[int, ...]:
  """0-based blocks after which `deit_standard` prunes: the ends of the first three quarters of the
  depth, floor(k * L / 4) - 1 for k = 1, 2, 3: (2, 5, 8) for 12 blocks, (0, 2, 3) for 6. Needs
  L >= 4 so the three points are distinct."""
  if num_layers < 4:
    raise ValueError(f'deit_standard needs at least 4 blocks, got {num_layers}.')
  return tuple(k * num_layers // 4 - 1 for k in (1, 2, 3))


def deit_standard(num_patches: int, num_layers: int) -> list[int]:
  """Tokens (CLS included) left after each layer under `deit_standard`: floor(P * 0.7 ** t) patches
  from the t-th point on (DynamicViT's `int(N * ratio)`), so [197] * 2 + [138] * 3 + [97] * 3 +
  [68] * 4 for DeiT-S at 224 (196 patches, 12 blocks)."""
  counts, patches, points = [], num_patches, deit_standard_points(num_layers)
  for layer in range(num_layers):
    if layer in points:
      t = points.index(layer) + 1
      # The epsilon keeps exact products from flooring one short in binary floats.
      patches = max(1, math.floor(num_patches * DEIT_STANDARD_RATE**t + 1e-9))
    counts.append(patches + 1)
  return counts


def constant_after_first(num_tokens: int, num_layers: int, keep: int) -> list[int]:
  """One-shot budget: `keep` tokens (CLS included) from the first pruning point on."""
  return [max(2, min(keep, num_tokens))] * num_layers


def unpruned(num_tokens: int, num_layers: int) -> list[int]:
  return [num_tokens] * num_layers
