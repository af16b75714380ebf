"""`mode=evaluate`: one checkpoint, every pruner of `prune.pruners`, one table.

Per pruner: top-1 accuracy, macro-F1, GFLOPs per image (from the tokens really run), throughput
(images/s of the jitted forward on one eval batch, median of rotated rounds), wall time of the
split, and the mean tokens kept after each layer. Heuristics take the `prune` schedule; learned
policies (`mappo`, `two_agent`) come from the train_policy runs in `init.policy_dirs`. Writes
`evaluate_results.{json,csv,md}` and `pruning_visualization.png`.
"""

import os
from typing import Any

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from vitprune_jax import parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare, diagnostics, visualize
from vitprune_jax.jobs import common, train_policy
from vitprune_jax.rl import policies


def check_pruner_names(names: tuple[str, ...], key: str = 'prune.pruners') -> None:
  known = tuple(pruning.PRUNERS) + tuple(policies.POLICIES)
  for name in names:
    if name not in known:
      raise UserError(
        f'Unknown pruner {name!r} in --config.{key}; choose from: {", ".join(known)}.'
      )


def draw(config, model, params, split: str, path: str, mesh) -> None:
  """The kept patches of `viz.pruner` on the first eval images (process 0 draws)."""
  vit_cfg = model.config
  pruner = common.heuristic(config, config.viz.pruner, vit_cfg)
  batch = parallel.shard_batch(next(common.split_batches(config, split)()), mesh)
  n = config.viz.num_images
  rng = jax.random.PRNGKey(config.seed)
  images = multihost_utils.process_allgather(batch['image'], tiled=True)[:n]
  options = ', '.join(
    f'{o}={config.prune[common.PRUNER_OPTION_KEYS[o]]}' for o in pruning.pruner_options(pruner.name)
  )
  if pruner.merger is not None:  # Which patches merged into which token.
    sources = visualize.merged_sources(model, params, batch['image'], pruner)[:n]
    title = f'{pruner.name} ({options}): each patch painted with the mean of its merged token'
    fig = visualize.merged_groups_figure(images, sources, vit_cfg, title)
  else:
    masks = visualize.kept_masks(model, params, batch['image'], pruner, rng)[:n]
    title = f'{pruner.name} ({options}): kept patches; pruned ones greyed'
    fig = visualize.kept_patches_figure(images, masks, vit_cfg, title)
  common.save_figure(fig, path, dpi=110)
  logging.info('Wrote %s', path)


def background_table(config, model, params, named, split, mesh) -> tuple[dict, str]:
  """Per scoring pruner, the share of its kept patches that are background after each layer, on
  the first eval batch (at most `viz.background_images` images)."""
  batch = parallel.shard_batch(next(common.split_batches(config, split)()), mesh)
  images = multihost_utils.process_allgather(batch['image'], tiled=True)
  mask = multihost_utils.process_allgather(batch['mask'], tiled=True) > 0
  n = min(config.viz.background_images, int(mask.sum()))
  rng = jax.random.PRNGKey(config.seed)
  shares, lines = {}, []
  for name, pruner in named:
    if pruner is None or pruner.score_fn is None:
      continue
    masks = visualize.kept_masks(model, params, batch['image'], pruner, rng)[mask][:n]
    shares[name] = diagnostics.background_share(images[mask][:n], masks, model.config)
  if shares:
    base = next(iter(shares.values()))['background_share']
    lines = [
      f'### Share of the kept patches that are background ({n} {split} images; '
      f'{100 * base:.1f} % of all patches are)',
      '',
      '| pruner | after each layer (%) |',
      '|---|---|',
    ] + [
      f'| {k} | {", ".join(f"{100 * v:.1f}" for v in d["kept_background_share"])} |'
      for k, d in shares.items()
    ]
  return shares, '\n'.join(lines) + '\n'


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  names = tuple(config.prune.pruners)
  check_pruner_names(names)
  if config.viz.num_images > 0 and config.viz.pruner != 'none':
    check_pruner_names((config.viz.pruner,), 'viz.pruner')
    if config.viz.pruner not in pruning.PRUNERS:
      raise UserError(f'--config.viz.pruner={config.viz.pruner!r} must be a heuristic pruner.')
  mesh = parallel.make_mesh()
  common.check_batch(config, 'eval.batch_size')
  model, params, meta = common.load_vit(config, config.init.vit_dir or workdir, mesh)
  split = config.eval.split
  wanted = [n for n in names if n in policies.POLICIES]
  learned = train_policy.learned_pruners(config, model, params, mesh, wanted)
  named = [
    (n, learned[n] if n in learned else common.heuristic(config, n, model.config)) for n in names
  ]
  records = common.compare_on_split(
    config, model, params, named, split, mesh, throughput_repeats=config.eval.throughput_repeats
  )
  for r, (n, _) in zip(records, named):
    if n in pruning.PRUNERS and n != 'none':
      for option in pruning.pruner_options(n):  # tome: r; evit: keep_rate, layers.
        r[option] = config.prune[common.PRUNER_OPTION_KEYS[option]]
  summary = {
    'split': split,
    'dataset': config.data.name,
    'checkpoint_dir': meta['checkpoint_dir'],
    'checkpoint_step': meta['checkpoint_step'],
    'num_examples': records[0]['num_examples'],
    'flops_convention': '1 multiply-add = 2 FLOPs',
  }
  if 'none' in names:
    unpruned = records[names.index('none')]
    summary.update(
      {
        f'{split}_accuracy': unpruned['accuracy'],
        f'{split}_macro_f1': unpruned['macro_f1'],
        f'{split}_loss': unpruned['loss'],
      }
    )
  title = (
    f'{config.data.name}, {split} split ({records[0]["num_examples"]} images), '
    f'{config.prune.execution} mode, checkpoint {meta["checkpoint_dir"]}'
  )
  table = compare.markdown_table(records, title)
  if config.viz.background_images > 0:
    summary['background_share'], extra = background_table(config, model, params, named, split, mesh)
    table += '\n' + extra
  common.write_records(workdir, 'evaluate_results', records, summary, table)
  common.print_table(table)
  if config.viz.num_images > 0 and config.viz.pruner != 'none':
    draw(config, model, params, split, os.path.join(workdir, 'pruning_visualization.png'), mesh)
  return dict(summary, records=records)
