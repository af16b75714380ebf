"""The accuracy-vs-compute comparison of every method at matched GFLOPs levels (`jobs/pareto.py`).

At a level (a target share of the unpruned GFLOPs) every method runs the same per-layer
capacities, those of the budget whose schedule comes closest to the level from below
(`budget_for_level`). At each level the best learned method is tested against the best heuristic
on the same test images, paired: McNemar's exact test on the images one gets right and the other
wrong (`mcnemar`). This module computes and draws; reading data and writing files is the job's.
"""

import textwrap
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
from matplotlib import figure
from scipy import stats

FAMILIES = ('none', 'random', 'heuristic', 'learned', 'merging')


def budget_for_level(
  gflops_ratio: Callable[[float], float], level: float, grid: Optional[np.ndarray] = None
) -> tuple[float, float]:
  """(b, its GFLOPs ratio): the budget of `grid` (default 0.001 .. 1 by 0.001) whose ratio is the
  largest not above `level`. ValueError when every budget costs more than `level`."""
  grid = np.round(np.arange(1, 1001) / 1000, 3) if grid is None else np.asarray(grid)
  best = None
  for b in grid:
    ratio = gflops_ratio(float(b))
    if ratio <= level + 1e-12 and (best is None or ratio > best[1]):
      best = (float(b), float(ratio))
  if best is None:
    raise ValueError(f'no budget reaches {level:g} of the unpruned GFLOPs')
  return best


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
  """McNemar's exact test of two classifiers on the same examples (per-example bool hits).

  a_only / b_only: examples only a / only b gets right; under the null (equal accuracy) a_only is
  Binomial(a_only + b_only, 1/2); the p-value is two-sided. `difference` = accuracy a - b.
  """
  a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
  if a.shape != b.shape:
    raise ValueError(f'paired predictions need the same examples, got {a.shape} and {b.shape}')
  a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
  n = a_only + b_only
  p = 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5).pvalue)
  return {
    'a_only': a_only,
    'b_only': b_only,
    'difference': float(a.mean() - b.mean()),
    'p_value': p,
  }


def best_of(records: Sequence[dict[str, Any]], family: str) -> Optional[dict[str, Any]]:
  """The most accurate record of `family`, or None."""
  members = [r for r in records if r['family'] == family]
  return max(members, key=lambda r: r['accuracy']) if members else None


def paired_tests(records: Sequence[dict[str, Any]], level: float) -> list[dict[str, Any]]:
  """The best learned record against the best heuristic and the best merging one, on the same
  images: McNemar on each seed of the learned one (`seed_correct`, per-example hits) against the
  other's first seed (`correct`), reported at the least significant seed (`p_values`: all)."""
  best_learned, tests = best_of(records, 'learned'), []
  for family in ('heuristic', 'merging'):
    best_other = best_of(records, family)
    if not (best_learned and best_other):
      continue
    runs = [mcnemar(c, best_other['correct']) for c in best_learned['seed_correct']]
    worst = max(runs, key=lambda t: t['p_value'])
    tests.append(
      dict(
        worst,
        level=level,
        learned=best_learned['method'],
        against=family,
        baseline=best_other['method'],
        difference=best_learned['accuracy'] - best_other['accuracy'],
        p_values=[t['p_value'] for t in runs],
      )
    )
  return tests


def markdown(records: Sequence[dict[str, Any]], tests: Sequence[dict[str, Any]], title: str) -> str:
  """One table per level (methods by accuracy), and the paired test of each level under it."""
  lines = [f'### {title}', '']
  by_level = {}
  for r in records:
    by_level.setdefault(r['level'], []).append(r)
  by_test_level = {}
  for t in tests:
    by_test_level.setdefault(t['level'], []).append(t)
  for level, rows in by_level.items():
    head = 'unpruned' if level == 1.0 else f'level {level:g} of the unpruned GFLOPs'
    lines += [
      f'**{head}**',
      '',
      '| method | family | accuracy (%) | macro-F1 | GFLOPs vs unpruned | images/s | '
      'tokens kept after each layer |',
      '|---|---|---|---|---|---|---|',
    ]
    for r in sorted(rows, key=lambda r: -r['accuracy']):
      accuracy = f'{100 * r["accuracy"]:.2f}'
      if r.get('seeds', 1) > 1:
        accuracy += f' ± {100 * r["ci95"]:.2f} ({r["seeds"]} seeds)'
      ips = f'{r["images_per_s"]:.0f}' if r.get('images_per_s') else '-'
      tokens = ', '.join(f'{t:g}' for t in r['tokens_per_layer'])
      lines.append(
        f'| {r["method"]} | {r["family"]} | {accuracy} | {r["macro_f1"]:.4f} | '
        f'{r["gflops_ratio"]:.3f} | {ips} | {tokens} |'
      )
    for t in by_test_level.get(level, []):
      lines += [
        '',
        f'Paired (McNemar, exact): {t["learned"]} vs {t["baseline"]} ({t["against"]}): '
        f'{100 * t["difference"]:+.2f} pt, {t["a_only"]} vs {t["b_only"]} images only one gets '
        f'right, p = {t["p_value"]:.2g}.',
      ]
    lines.append('')
  return '\n'.join(lines)


def plot(records: Sequence[dict[str, Any]], title: str) -> figure.Figure:
  """Two panels: accuracy vs GFLOPs ratio, and accuracy vs measured images/s; one line per method
  (random with its 95 % CI as error bars), the unpruned model as a star."""
  fig = figure.Figure(figsize=(11, 4.4))
  panels = fig.subplots(1, 2, sharey=True)
  methods = list(dict.fromkeys(r['method'] for r in records if r['family'] != 'none'))
  unpruned = [r for r in records if r['family'] == 'none']
  for ax, x_key, x_label in (
    (panels[0], 'gflops_ratio', 'GFLOPs vs unpruned'),
    (panels[1], 'images_per_s', 'images/s (measured, this machine)'),
  ):
    for method in methods:
      rows = sorted(
        (r for r in records if r['method'] == method and r.get(x_key)), key=lambda r: r[x_key]
      )
      if not rows:
        continue
      ax.errorbar(
        [r[x_key] for r in rows],
        [100 * r['accuracy'] for r in rows],
        yerr=[100 * r.get('ci95', 0.0) for r in rows],
        marker='o',
        ms=4,
        capsize=2,
        label=method,
      )
    for r in unpruned:
      if r.get(x_key):
        ax.scatter([r[x_key]], [100 * r['accuracy']], marker='*', s=140, c='k', label='unpruned')
    ax.set_xlabel(x_label)
    ax.grid(alpha=0.3)
  panels[0].set_ylabel('accuracy (%)')
  panels[1].legend(fontsize=7)
  fig.suptitle(textwrap.fill(title, 160), fontsize=9)
  fig.tight_layout()
  return fig
