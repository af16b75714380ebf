"""`mode='sweep'`: grid over the schedule's alpha and r_max, as seed 002 §5 does, with a Pareto plot.

Schedules are scored on `config.prune.sweep_split` (validation by default). The selected schedule is the one
with the fewest GFLOPs whose accuracy is within `sweep_tolerance` of the unpruned model on that split. Only then
are the unpruned model and the selected schedule evaluated on `config.eval.split`, so no choice sees the test set.
Writes `sweep_results.{json,csv,md}` and `sweep_pareto.png`.
"""
import itertools
import os
from typing import Any, Optional

import jax
import matplotlib
import ml_collections

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from vitprune_jax import parallel
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare
from vitprune_jax.evaluation import evaluate as evaluation
from vitprune_jax.evaluation import visualize


def pareto_front(records: list[dict[str, Any]]) -> list[int]:
  """Indices of records no other record beats on both accuracy (higher) and GFLOPs (lower)."""
  front = []
  for i, r in enumerate(records):
    dominated = any(o['accuracy'] >= r['accuracy'] and o['gflops'] <= r['gflops'] and
                    (o['accuracy'] > r['accuracy'] or o['gflops'] < r['gflops']) for o in records)
    if not dominated:
      front.append(i)
  return front


def select_schedule(records: list[dict[str, Any]], reference_accuracy: float, tolerance: float
                    ) -> Optional[dict[str, Any]]:
  ok = [r for r in records if r['accuracy'] >= reference_accuracy - tolerance - 1e-12]
  return min(ok, key=lambda r: (r['gflops'], -r['accuracy'])) if ok else None


def plot(records: list[dict[str, Any]], reference: dict[str, Any], front: list[int], path: str, title: str
         ) -> None:
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  ax.scatter([r['gflops'] for r in records], [100 * r['accuracy'] for r in records], c='tab:blue', s=18,
             label='schedules')
  pts = sorted((records[i] for i in front), key=lambda r: r['gflops'])
  ax.plot([r['gflops'] for r in pts], [100 * r['accuracy'] for r in pts], 'o-', c='tab:red', ms=5,
          label='Pareto front')
  for r in pts:
    ax.annotate(f'a={r["alpha"]}, r={r["r_max"]}', (r['gflops'], 100 * r['accuracy']), fontsize=6,
                xytext=(3, -8), textcoords='offset points')
  ax.scatter([reference['gflops']], [100 * reference['accuracy']], marker='*', s=120, c='k', label='unpruned')
  ax.set_xlabel('GFLOPs per image (1 MAC = 2 FLOPs)')
  ax.set_ylabel('accuracy (%)')
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  visualize.save_figure(fig, path, dpi=120)


def sweep(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  pruner = config.prune.sweep_pruner
  compare.check_prune_config(config, (pruner,))
  if pruner == 'none':
    raise UserError('--config.prune.sweep_pruner=none has no schedule to sweep; use e.g. cls_attention.')
  mesh = parallel.make_mesh()
  parallel.check_global_batch(config.eval.batch_size, 'eval.batch_size')
  model, params, meta = evaluation.load_model_for_reuse(config, config.eval.checkpoint_dir or workdir, mesh)
  split = config.prune.sweep_split
  reference = compare.compare_pruners(config, model, params, ('none',), split, mesh, r_max=0.0, alpha=1.0,
                                      throughput=False)[0]
  records = []
  for alpha, r_max in itertools.product(config.prune.sweep_alphas, config.prune.sweep_r_maxes):
    records += compare.compare_pruners(config, model, params, (pruner,), split, mesh, r_max=float(r_max),
                                       alpha=float(alpha), throughput=False, warm_data=False)
  front = pareto_front(records)
  for i, r in enumerate(records):
    r['pareto'] = i in front
  chosen = select_schedule(records, reference['accuracy'], config.prune.sweep_tolerance)
  summary = {'split': split, 'pruner': pruner, 'dataset': config.dataset.name,
             'checkpoint_dir': meta['checkpoint_dir'], 'unpruned': reference,
             'tolerance': config.prune.sweep_tolerance, 'selected': chosen}
  if chosen is not None:
    # Test figures for the schedule chosen on `split`, next to the unpruned model and the baselines.
    final = compare.compare_pruners(config, model, params, ('none', 'random', 'greedy', pruner),
                                    config.eval.split, mesh, r_max=chosen['r_max'], alpha=chosen['alpha'])
    summary['selected_on_eval_split'] = final
  title = (f'{pruner} schedules on {config.dataset.name} {split} '
           f'({reference["num_examples"]} images)')
  table = compare.markdown_table([reference] + records, title)
  if chosen is not None:
    table += ('\n' + compare.markdown_table(
        summary['selected_on_eval_split'],
        f'Selected on {split} (alpha={chosen["alpha"]}, r_max={chosen["r_max"]}): {config.eval.split} split'))
  compare.write_records(workdir, 'sweep_results', [reference] + records, summary, table)
  if chosen is None:
    table += f'\nNo schedule stays within {config.prune.sweep_tolerance} of the unpruned accuracy.\n'
  if jax.process_index() == 0:
    plot(records, reference, front, os.path.join(workdir, 'sweep_pareto.png'), title)
    print(table)
  return summary
