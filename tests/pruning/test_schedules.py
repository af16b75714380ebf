"""Seed 002's keep_ratio schedule, exactly as its README prints it."""

import pytest

from vitprune_jax import pruning
from vitprune_jax.pruning import schedules


def test_seed_002_counts():
  assert pruning.tokens_per_layer(144, 8, 0.6, 2.0) == [143, 137, 125, 106, 81, 54, 29, 12]
  assert pruning.tokens_per_layer(144, 8, 0.6, 1.2)[-1] == 5


def test_keep_ratio_formula():
  assert schedules.keep_ratio(0, 8, 0.6, 2.0) == pytest.approx(1 - 0.6 / 64)
  assert schedules.keep_ratio(7, 8, 0.6, 2.0) == pytest.approx(0.4)


@pytest.mark.parametrize('r_max,alpha', [(0.0, 1.0), (0.3, 0.5), (0.9, 1.0), (1.0, 3.0)])
def test_counts_are_monotone_and_keep_a_patch(r_max, alpha):
  counts = pruning.tokens_per_layer(196, 12, r_max, alpha)
  assert len(counts) == 12
  assert all(a >= b for a, b in zip(counts, counts[1:]))
  assert counts[-1] >= 2 and counts[0] <= 197
  if r_max == 0.0:
    assert counts == [197] * 12


def test_bad_parameters():
  with pytest.raises(ValueError):
    pruning.tokens_per_layer(144, 8, 1.5, 2.0)
  with pytest.raises(ValueError):
    pruning.tokens_per_layer(144, 8, 0.5, 0.0)


def test_deit_standard_is_the_literatures_schedule():
  # DeiT-S at 224: 196 patches; 0.7, 0.49, 0.343 of them, floored, after blocks 3, 6, 9 (1-based).
  assert schedules.deit_standard_points(12) == (2, 5, 8)
  assert schedules.deit_standard(196, 12) == [197] * 2 + [138] * 3 + [97] * 3 + [68] * 4
  # The benchmark ViT: 6 blocks, 49 patches: floor(49 * 0.7) = 34, floor(24.01) = 24, 16.
  assert schedules.deit_standard_points(6) == (0, 2, 3)
  assert schedules.deit_standard(49, 6) == [35, 35, 25, 17, 17, 17]
  with pytest.raises(ValueError, match='at least 4 blocks'):
    schedules.deit_standard_points(3)


def test_deit_standard_for_every_scoring_pruner_and_as_a_policy_budget():
  import jax.numpy as jnp

  from vitprune_jax.errors import UserError
  from vitprune_jax.models import vit
  from vitprune_jax.rl import pruning_env

  cfg = vit.make_vit_config('fashion_mnist', num_classes=10, image_size=28, num_channels=1)
  counts = tuple(schedules.deit_standard(49, 6))
  for name in ('random', 'cls_attention', 'mean_attention', 'similarity', 'cls_value_attention'):
    pruner = pruning.make_pruner(name, cfg, r_max=0.6, alpha=2.0, schedule='deit_standard')
    assert pruner.budget == counts, name
  # A budget-mode policy acting at the deit_standard points, deployed at b = 0.7, keeps exactly
  # these patches (configs/fashion_mnist_policy.py:deit_standard).
  kept = pruning_env.budget_counts(cfg, schedules.deit_standard_points(6), 'geometric', 0.7)
  assert [int(k) for k in kept] == [34, 24, 16]
  assert jnp.all(kept + 1 == jnp.array([counts[p] for p in (0, 2, 3)]))
  with pytest.raises(UserError, match='unknown schedule'):
    pruning.make_pruner('cls_attention', cfg, r_max=0.6, alpha=2.0, schedule='deit')
  tiny = vit.make_vit_config('digits', num_classes=10, image_size=8, num_channels=1, num_layers=3)
  with pytest.raises(UserError, match='needs >= 4 blocks'):
    pruning.make_pruner('random', tiny, r_max=0.6, alpha=2.0, schedule='deit_standard')
