"""The schedule sweep's selection rule and Pareto plot (the grid itself runs in `jobs/sweep.py`).

Seed 002 §5 sweeps the schedule's alpha and r_max. A schedule is selected on a split that is not
the reported one (validation): the one with the fewest GFLOPs whose accuracy is within `tolerance`
of the unpruned model's. The records are `compare.compare_pruners` records with r_max and alpha
filled in.
"""

from collections.abc import Sequence
from typing import Any, Optional

from matplotlib import figure


def pareto_front(records: Sequence[dict[str, Any]]) -> list[int]:
  """Indices of records no other record beats on both accuracy (higher) and GFLOPs (lower)."""
  front = []
  for i, r in enumerate(records):
    dominated = any(
      o['accuracy'] >= r['accuracy']
      and o['gflops'] <= r['gflops']
      and (o['accuracy'] > r['accuracy'] or o['gflops'] < r['gflops'])
      for o in records
    )
    if not dominated:
      front.append(i)
  return front


def select_schedule(
  records: Sequence[dict[str, Any]], reference_accuracy: float, tolerance: float
) -> Optional[dict[str, Any]]:
  """The cheapest record (then the most accurate) within `tolerance` of the reference; or None."""
  ok = [r for r in records if r['accuracy'] >= reference_accuracy - tolerance - 1e-12]
  return min(ok, key=lambda r: (r['gflops'], -r['accuracy'])) if ok else None


def plot(
  records: Sequence[dict[str, Any]], reference: dict[str, Any], front: Sequence[int], title: str
) -> figure.Figure:
  """Accuracy against GFLOPs: every schedule, the Pareto front (annotated) and the unpruned model.

  A bare `matplotlib.figure.Figure` (no pyplot state to close); the caller saves it.
  """
  fig = figure.Figure(figsize=(6.4, 4.4))
  ax = fig.subplots()
  ax.scatter(
    [r['gflops'] for r in records],
    [100 * r['accuracy'] for r in records],
    c='tab:blue',
    s=18,
    label='schedules',
  )
  pts = sorted((records[i] for i in front), key=lambda r: r['gflops'])
  ax.plot(
    [r['gflops'] for r in pts],
    [100 * r['accuracy'] for r in pts],
    'o-',
    c='tab:red',
    ms=5,
    label='Pareto front',
  )
  for r in pts:
    ax.annotate(
      f'a={r["alpha"]}, r={r["r_max"]}',
      (r['gflops'], 100 * r['accuracy']),
      fontsize=6,
      xytext=(3, -8),
      textcoords='offset points',
    )
  ax.scatter(
    [reference['gflops']], [100 * reference['accuracy']], marker='*', s=120, c='k', label='unpruned'
  )
  ax.set_xlabel('GFLOPs per image (1 MAC = 2 FLOPs)')
  ax.set_ylabel('accuracy (%)')
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig
