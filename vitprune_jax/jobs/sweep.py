"""`mode=sweep`: a grid over the schedule's alpha and r_max (CLS-attention paper, section 5).

Schedules are scored on `sweep.split` (validation by default). The selected schedule is the one with
the fewest GFLOPs whose accuracy is within `sweep.tolerance` of the unpruned model on that split.
Only then are the unpruned model, random, greedy and the selected schedule evaluated on
`eval.split`, so no choice sees the test set. Writes `sweep_results.{json,csv,md}` and
`sweep_pareto.png`.
"""

import itertools
import os
from typing import Any

import ml_collections

from vitprune_jax import parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare
from vitprune_jax.evaluation import sweep as sweep_lib
from vitprune_jax.jobs import common


def _scored(config, model, params, names, split, mesh, r_max, alpha, repeats):
  vit_cfg = model.config
  named = [
    (n, None if n == 'none' else pruning.make_pruner(n, vit_cfg, r_max=r_max, alpha=alpha))
    for n in names
  ]
  # The caller reads each split once untimed first (common.warm_up).
  records = common.compare_on_split(
    config, model, params, named, split, mesh, throughput_repeats=repeats, warm=False
  )
  for r, (n, _) in zip(records, named):
    if n != 'none':
      r['r_max'], r['alpha'] = r_max, alpha
  return records


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  s = config.sweep
  if s.pruner not in pruning.PRUNERS:
    raise UserError(
      f'Unknown --config.sweep.pruner={s.pruner!r}; choose from: {", ".join(pruning.PRUNERS)}.'
    )
  if s.pruner in pruning.MERGERS:
    raise UserError(
      f"--config.sweep.pruner={s.pruner!r}: the sweep is over seed 002's schedule (alpha, r_max); "
      f'{s.pruner} has its own option: compare it at matched GFLOPs with mode=pareto.'
    )
  if s.pruner == 'none':
    raise UserError('--config.sweep.pruner=none has no schedule to sweep; use e.g. cls_attention.')
  mesh = parallel.make_mesh()
  common.check_batch(config, 'eval.batch_size')
  model, params, meta = common.load_vit(config, config.init.vit_dir or workdir, mesh)
  batches = common.split_batches(config, s.split)
  common.warm_up(batches)
  reference = _scored(config, model, params, ('none',), s.split, mesh, 0.0, 1.0, 0)[0]
  records = []
  for alpha, r_max in itertools.product(s.alphas, s.r_maxes):
    records += _scored(
      config, model, params, (s.pruner,), s.split, mesh, float(r_max), float(alpha), 0
    )
  front = sweep_lib.pareto_front(records)
  for i, r in enumerate(records):
    r['pareto'] = i in front
  chosen = sweep_lib.select_schedule(records, reference['accuracy'], s.tolerance)
  summary = {
    'split': s.split,
    'pruner': s.pruner,
    'dataset': config.data.name,
    'checkpoint_dir': meta['checkpoint_dir'],
    'unpruned': reference,
    'tolerance': s.tolerance,
    'selected': chosen,
  }
  title = (
    f'{s.pruner} schedules on {config.data.name} {s.split} ({reference["num_examples"]} images)'
  )
  table = compare.markdown_table([reference] + records, title)
  if chosen is not None:
    # Figures on eval.split for the schedule chosen on sweep.split, next to the baselines.
    common.warm_up(common.split_batches(config, config.eval.split))
    final = _scored(
      config,
      model,
      params,
      ('none', 'random', 'greedy', s.pruner),
      config.eval.split,
      mesh,
      chosen['r_max'],
      chosen['alpha'],
      config.eval.throughput_repeats,
    )
    summary['selected_on_eval_split'] = final
    table += '\n' + compare.markdown_table(
      final,
      f'Selected on {s.split} (alpha={chosen["alpha"]}, r_max={chosen["r_max"]}): '
      f'{config.eval.split} split',
    )
  common.write_records(workdir, 'sweep_results', [reference] + records, summary, table)
  if chosen is None:
    table += f'\nNo schedule stays within {s.tolerance} of the unpruned accuracy.\n'
  fig = sweep_lib.plot(records, reference, front, title)
  common.save_figure(fig, os.path.join(workdir, 'sweep_pareto.png'), dpi=120)
  common.print_table(table)
  return summary
