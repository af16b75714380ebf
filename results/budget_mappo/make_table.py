"""The table of results/budget_mappo/README.md, from the three train_policy_results JSONs here.

  python results/budget_mappo/make_table.py

Run seed s draws random seeds s..s+4, so the three runs hold 7 distinct random seeds (0-6); each
is counted once. CIs are 95 % Student-t half-widths of the mean.
"""

import json
import pathlib

import numpy as np
from scipy import stats

HERE = pathlib.Path(__file__).parent


def half_width(x: np.ndarray) -> float:
  return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def table() -> str:
  runs = [json.loads((HERE / f'seed{s}.json').read_text()) for s in range(3)]
  lines = []

  def record(run, name):
    return next(r for r in run['records'] if r['pruner'] == name)

  lines.append(
    '| budget b | GFLOPs vs unpruned | MAPPO (3 seeds, mean ± 95 % CI) | per seed | '
    'random (7 seeds) | cls_attention | MAPPO − random |'
  )
  lines.append('|---|---|---|---|---|---|---|')
  for b in ('0.7', '0.77', '0.85'):
    mappo = np.array([record(r, f'mappo@b={b}')['accuracy'] for r in runs]) * 100
    draws = {}
    for seed, run in enumerate(runs):
      for i, a in enumerate(record(run, f'random@matched@b={b}')['accuracy_seeds']):
        draws.setdefault(seed + i, a)
    rnd = np.array(list(draws.values())) * 100
    cls = record(runs[0], f'cls_attention@matched@b={b}')['accuracy'] * 100
    ratio = record(runs[0], f'mappo@b={b}')['gflops_ratio']
    per_seed = ', '.join(f'{x:.2f}' for x in mappo)
    lines.append(
      f'| {b} | {ratio:.2f} | {mappo.mean():.2f} ± {half_width(mappo):.2f} | {per_seed} | '
      f'{rnd.mean():.2f} ± {half_width(rnd):.2f} | {cls:.2f} | '
      f'**{mappo.mean() - rnd.mean():+.2f}** |'
    )

  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  print(table(), end='')
