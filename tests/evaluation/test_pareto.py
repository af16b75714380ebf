"""The Pareto comparison's pieces: the budget of a level, McNemar's test, best of a family."""

import numpy as np
import pytest

from vitprune_jax.evaluation import pareto


def test_the_budget_of_a_level_is_the_costliest_one_not_above_it():
  # A ratio that grows in steps of 0.1 with b: level 0.55 gets the step at 0.5, from b = 0.5 on,
  # and the first b of that step on the grid; level 0.05 is out of reach.
  steps = lambda b: np.floor(10 * b) / 10
  assert pareto.budget_for_level(steps, 0.55, grid=np.arange(1, 11) / 10) == (0.5, 0.5)
  assert pareto.budget_for_level(lambda b: b * b, 0.49) == (0.7, pytest.approx(0.49))
  with pytest.raises(ValueError, match='no budget reaches 0.05'):
    pareto.budget_for_level(lambda b: 0.1 + b, 0.05)


def test_mcnemar_counts_the_discordant_images_and_tests_them_exactly():
  a = np.array([1, 1, 1, 0, 1], bool)
  b = np.array([0, 0, 1, 1, 1], bool)
  t = pareto.mcnemar(a, b)
  # a alone right on 2 images, b alone on 1: Binomial(3, 1/2), two-sided p = 1.
  assert (t['a_only'], t['b_only']) == (2, 1)
  assert t['difference'] == pytest.approx(0.2)
  assert t['p_value'] == pytest.approx(1.0)
  # 10 discordant images all for a: p = 2 * 0.5 ** 10.
  a, b = np.ones(30, bool), np.r_[np.zeros(10, bool), np.ones(20, bool)]
  assert pareto.mcnemar(a, b)['p_value'] == pytest.approx(2 * 0.5**10)
  assert pareto.mcnemar(b, b)['p_value'] == 1.0
  with pytest.raises(ValueError, match='same examples'):
    pareto.mcnemar(a, b[:5])


def test_best_of_a_family():
  rows = [
    {'method': 'x', 'family': 'heuristic', 'accuracy': 0.5},
    {'method': 'y', 'family': 'heuristic', 'accuracy': 0.7},
    {'method': 'z', 'family': 'learned', 'accuracy': 0.9},
  ]
  assert pareto.best_of(rows, 'heuristic')['method'] == 'y'
  assert pareto.best_of(rows, 'merging') is None
