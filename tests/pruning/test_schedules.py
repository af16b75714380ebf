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
