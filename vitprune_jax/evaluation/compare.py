"""`mode='evaluate'`: one checkpoint, every pruner of `config.prune.pruners`, one table.

Per pruner: top-1 accuracy, macro-F1, GFLOPs per image (analytic, from the tokens actually kept), throughput
(images/s of the jitted forward on one eval batch after warm-up, median of interleaved repeats), wall time of
the whole split after compilation (input pipeline included), and mean tokens kept after each layer. Written as
`evaluate_results.{json,csv,md}`.
"""
import csv
import json
import os
import statistics
import time
from typing import Any, Optional

import jax
import ml_collections
import tensorflow as tf
from absl import logging

from vitprune_jax import parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.evaluation import evaluate as evaluation
from vitprune_jax.evaluation import visualize
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit



LEARNED = ('mappo', 'two_agent')  # Loaded from the train_policy runs listed in config.rl.policy_dir.


def check_prune_config(config: ml_collections.ConfigDict, names: tuple[str, ...]) -> None:
  for name in names:
    if name not in pruning.PRUNERS + LEARNED:
      raise UserError(f'Unknown pruner {name!r} in --config.prune.pruners; choose from: '
                      f'{", ".join(pruning.PRUNERS + LEARNED)}.')
    if name in LEARNED and not config.rl.policy_dir:
      raise UserError(f'Pruner {name!r} is a learned policy: set --config.rl.policy_dir to its train_policy '
                      'workdir (several: comma-separated).')
  if config.prune.mode not in pruning.MODES:
    raise UserError(f'Unknown --config.prune.mode={config.prune.mode!r}; use compact or mask.')


def measure_throughput(model: vit.VisionTransformer, params: Any, pruners: list[Optional[pruning.Pruner]],
                       mode: str, images: jax.Array, repeats: int, rng: jax.Array) -> list[float]:
  """Images/s of each pruned forward on the same batch: compiled and warmed first, then interleaved rounds."""
  fns = []
  for pruner in pruners:
    fn = jax.jit(lambda p, x, r, pruner=pruner: model.apply(
        {'params': p}, x, token_selector=None if pruner is None else pruning.make_selector(
            pruner, mode=mode, rng=r))[0])
    jax.block_until_ready(fn(params, images, rng))
    fns.append(fn)
  times = [[] for _ in fns]
  for _ in range(max(1, repeats)):
    for i, fn in enumerate(fns):
      start = time.perf_counter()
      jax.block_until_ready(fn(params, images, rng))
      times[i].append(time.perf_counter() - start)
  return [images.shape[0] / statistics.median(t) for t in times]


def compare_pruners(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any,
                    names: tuple[str, ...], split: str, mesh: jax.sharding.Mesh, *, r_max: float, alpha: float,
                    throughput: bool = True, warm_data: bool = True) -> list[dict[str, Any]]:
  """Evaluates each named heuristic pruner (same schedule parameters) on `split`; one record per pruner."""
  named = [(n, None if n == 'none' else pruning.make_pruner(n, model.config, r_max=r_max, alpha=alpha))
           for n in names]
  records = compare_pruner_objects(config, model, params, named, split, mesh, throughput=throughput,
                                   warm_data=warm_data)
  for r, (_, pruner) in zip(records, named):
    r['r_max'], r['alpha'] = (None, None) if pruner is None else (r_max, alpha)
  return records


def compare_pruner_objects(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any,
                           named: list[tuple[str, Optional[pruning.Pruner]]], split: str,
                           mesh: jax.sharding.Mesh, *, throughput: bool = True, warm_data: bool = True
                           ) -> list[dict[str, Any]]:
  """Evaluates any pruners (heuristic or learned; None = unpruned) on `split`.

  GFLOPs: in compact mode those of the per-layer capacities (what really runs); in mask mode those of the mean
  tokens kept (what compact mode would run at best). `gflops_kept` is always the latter.
  """
  cfg = model.config
  rng = jax.random.PRNGKey(config.seed)
  mode = config.prune.mode
  # One untimed pass over the split first, so the first pruner's eval time does not pay for loading the data
  # (callers that already read the split, like the sweep's grid, skip it).
  if warm_data:
    ds = input_pipeline.make_dataset(config, split, global_batch_size=config.eval.batch_size, train=False)
    for _ in input_pipeline.as_numpy(ds):
      pass
  records = []
  for name, pruner in named:
    result = evaluation.evaluate_params(config, model, params, split, mesh, pruner, mode, rng)
    logging.info('%s on %s: accuracy %.4f, tokens per layer %s', name, split, result['accuracy'],
                 [round(t, 1) for t in result['tokens_per_layer']])
    gflops_kept = pruning.gflops(cfg, result['tokens_per_layer'])
    records.append({
        'pruner': name, 'r_max': None, 'alpha': None, 'mode': mode, 'split': split,
        'accuracy': result['accuracy'], 'macro_f1': result['macro_f1'], 'loss': result['loss'],
        'gflops': pruning.gflops(cfg, pruner.budget) if (pruner is not None and mode == 'compact') else gflops_kept,
        'gflops_kept': gflops_kept, 'eval_time_s': result['eval_time_s'],
        'tokens_per_layer': [round(t, 2) for t in result['tokens_per_layer']],
        'num_examples': result['num_examples']})
  full = pruning.gflops(cfg, [cfg.num_tokens] * cfg.num_layers)
  for r in records:
    r['gflops_ratio'] = r['gflops'] / full
  if throughput:
    ds = input_pipeline.make_dataset(config, split, global_batch_size=config.eval.batch_size, train=False)
    batch = parallel.shard_batch(next(input_pipeline.as_numpy(ds)), mesh)
    ips = measure_throughput(model, params, [p for _, p in named], mode, batch['image'],
                             config.prune.throughput_repeats, rng)
    names = [n for n, _ in named]
    base = ips[names.index('none')] if 'none' in names else None
    for r, v in zip(records, ips):
      r['images_per_s'] = v
      r['speedup'] = v / base if base else None
  return records


def markdown_table(records: list[dict[str, Any]], title: str) -> str:
  lines = [f'### {title}', '',
           '| pruner | r_max | alpha | accuracy (%) | macro-F1 | GFLOPs/img (1 MAC = 2 FLOPs) | GFLOPs vs '
           'unpruned | images/s | speedup | eval time (s) | tokens kept after each layer |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in records:
    ips = f'{r["images_per_s"]:.0f}' if r.get('images_per_s') else '-'
    speedup = f'{r["speedup"]:.2f}x' if r.get('speedup') else '-'
    tokens = ', '.join(f'{t:g}' for t in r['tokens_per_layer'])
    lines.append(f'| {r["pruner"]} | {r["r_max"] if r["r_max"] is not None else "-"} | '
                 f'{r["alpha"] if r["alpha"] is not None else "-"} | {100 * r["accuracy"]:.2f} | '
                 f'{r["macro_f1"]:.4f} | {r["gflops"]:.4f} | {r["gflops_ratio"]:.2f} | {ips} | {speedup} | '
                 f'{r["eval_time_s"]:.1f} | {tokens} |')
  return '\n'.join(lines) + '\n'


def write_records(workdir: str, stem: str, records: list[dict[str, Any]], summary: dict[str, Any],
                  table: str) -> None:
  """Process 0 writes `<stem>.{json,md,csv}`; tf.io.gfile, so a gs:// workdir works like a local one."""
  if jax.process_index() != 0:
    return
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, f'{stem}.json'), 'w') as f:
    json.dump(dict(summary, records=records), f, indent=2)
  with tf.io.gfile.GFile(os.path.join(workdir, f'{stem}.md'), 'w') as f:
    f.write(table)
  keys = list(dict.fromkeys(k for r in records for k in r))  # Union, in first-seen order.
  with tf.io.gfile.GFile(os.path.join(workdir, f'{stem}.csv'), 'w') as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for r in records:
      writer.writerow({k: (' '.join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()})


def _learned_pruners(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any,
                     names: list[str], mesh: jax.sharding.Mesh) -> dict[str, pruning.Pruner]:
  if not names:
    return {}
  from vitprune_jax.rl import train_policy  # pylint: disable=g-import-not-at-top  (rl builds on this module)
  found = {}
  for path in [p.strip() for p in config.rl.policy_dir.split(',') if p.strip()]:
    actor, actor_params, meta = train_policy.load_policy(path, config, model.config, params, mesh)
    found[meta['kind']] = train_policy.learned_pruner(config, model, params, actor, actor_params, meta, mesh)
  missing = [n for n in names if n not in found]
  if missing:
    raise UserError(f'No {missing[0]} policy in --config.rl.policy_dir={config.rl.policy_dir!r}; train one with '
                    f'mode=train_policy and rl.policy={missing[0]}.')
  return found


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`mode='evaluate'`: the pruner comparison on `config.eval.split` for one checkpoint."""
  names = tuple(config.prune.pruners)
  check_prune_config(config, names)
  mesh = parallel.make_mesh()
  parallel.check_global_batch(config.eval.batch_size, 'eval.batch_size')
  model, params, meta = evaluation.load_model_for_reuse(config, config.eval.checkpoint_dir or workdir, mesh)
  split = config.eval.split
  learned = _learned_pruners(config, model, params, [n for n in names if n in LEARNED], mesh)
  named = [(n, learned[n] if n in LEARNED else None if n == 'none' else
            pruning.make_pruner(n, model.config, r_max=config.prune.r_max, alpha=config.prune.alpha))
           for n in names]
  records = compare_pruner_objects(config, model, params, named, split, mesh)
  for r, (n, _) in zip(records, named):
    if n not in LEARNED + ('none',):
      r['r_max'], r['alpha'] = config.prune.r_max, config.prune.alpha
  summary = {'split': split, 'dataset': config.dataset.name, 'checkpoint_dir': meta['checkpoint_dir'],
             'checkpoint_step': meta['checkpoint_step'], 'num_examples': records[0]['num_examples'],
             'flops_convention': '1 multiply-add = 2 FLOPs'}
  if 'none' in names:
    unpruned = records[names.index('none')]
    summary.update({f'{split}_accuracy': unpruned['accuracy'], f'{split}_macro_f1': unpruned['macro_f1'],
                    f'{split}_loss': unpruned['loss']})
  table = markdown_table(records, f'{config.dataset.name}, {split} split ({records[0]["num_examples"]} images), '
                                  f'{config.prune.mode} mode, checkpoint {meta["checkpoint_dir"]}')
  write_records(workdir, 'evaluate_results', records, summary, table)
  if jax.process_index() == 0:
    print(table)
  if config.prune.visualize_images > 0 and config.prune.visualize_pruner != 'none':
    check_prune_config(config, (config.prune.visualize_pruner,))
    path = visualize.draw_kept_patches(config, model, params, split,
                                       os.path.join(workdir, 'pruning_visualization.png'), mesh)
    logging.info('Wrote %s', path)
  return dict(summary, records=records)
