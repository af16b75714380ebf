"""`mode=finetune`: fine-tune one copy of the ViT per method, each on its own pruning, then compare.

The policy (the first of `init.policy_dirs`) is frozen and fixes the per-layer capacities: a
budget-mode policy's at the first of `deploy.budgets`, a free-mode or two-agent policy's its
deployed ones (bucketed on validation). Each of `finetune.methods` then fine-tunes its own copy of
the ViT (`init.vit_dir`) in `<workdir>/<method>`, same epochs and recipe (`train.*`), and is scored
on its own copy:
- 'none': unpruned, the reference (the ViT fine-tuned for the same epochs);
- a heuristic (`random`, `similarity`, `cls_attention`, ...): at the policy's capacities, compact
  mode, in training and in evaluation (random over `deploy.random_seeds` seeds in evaluation);
- 'policy': `finetune.train_on` picks what the ViT sees while it trains: 'policy' (RL4EViT: the
  policy's own per-image decisions, mask mode) or 'deployed' (exactly what inference runs, compact
  mode, capacities filled by the policy's scores). It is scored deployed at the shared capacities
  and, where they differ, on its own decisions inside them (free mode) or filled (two_agent: its
  own votes).
Everything else is `mode=train` (optimizer, checkpoints, resume). Writes
`finetune_comparison.{json,csv,md}` with every record marked `finetuned`, beside the original
ViT's unpruned accuracy.
"""

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from vitprune_jax import parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare, evaluate
from vitprune_jax.jobs import common, train, train_policy
from vitprune_jax.rl import policies


def check_methods(methods: tuple[str, ...]) -> None:
  known = ('none', 'policy') + tuple(n for n in pruning.PRUNERS if n != 'none')
  if not methods:
    raise UserError(f'--config.finetune.methods is empty; choose from: {", ".join(known)}.')
  for m in methods:
    if m not in known:
      raise UserError(
        f'--config.finetune.methods: unknown method {m!r}; choose from: {", ".join(known)}.'
      )


def _tuned_params(config, workdir, state, metrics, mesh):
  """The fine-tuned params chosen on validation: the final ones, unless an earlier epoch was better
  (read back from `best/`)."""
  if metrics['best_step'] == int(state.step):
    return state.params, metrics['best_step']
  _, tuned, meta = common.load_vit(config, workdir, mesh)
  return tuned, meta['checkpoint_step']


def _scored(config, model, params, pruner, name, split, mesh) -> list[dict[str, Any]]:
  """Records of one method on its own tuned copy (a random pruner over its seeds)."""
  seeds = config.deploy.random_seeds if pruner is not None and pruner.name == 'random' else 1
  rows = [
    common.compare_on_split(
      config,
      model,
      params,
      [(name, pruner)],
      split,
      mesh,
      throughput_repeats=config.eval.throughput_repeats if i == 0 else 0,
      warm=False,
      seed=config.seed + i,
    )[0]
    for i in range(seeds)
  ]
  return [compare.mean_over_seeds(rows, name) if seeds > 1 else rows[0]]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if not config.init.vit_dir or not config.init.policy_dirs:
    raise UserError(
      'finetune needs --config.init.vit_dir (the ViT run) and --config.init.policy_dirs '
      '(the train_policy run).'
    )
  methods = tuple(config.finetune.methods)
  check_methods(methods)
  mesh = parallel.make_mesh()
  common.check_batch(config, 'eval.batch_size')
  model, params, _ = common.load_vit(config, config.init.vit_dir, mesh)
  vit_cfg = model.config
  actor, actor_params, spec = policies.load_policy(config.init.policy_dirs[0], model, params, mesh)
  deployed = train_policy.deployed_pruner(config, model, params, actor, actor_params, spec, mesh)
  budget = config.deploy.budgets[0] if spec.action_mode == 'budget' else None
  capacities = deployed.budget
  split = config.eval.split
  common.warm_up(common.split_batches(config, split))
  original = evaluate.evaluate_params(
    model, params, common.split_batches(config, split)(), mesh=mesh, rng=jax.random.PRNGKey(0)
  )
  records, trained = [], {}
  config = config.copy_and_resolve_references()
  config.train.pruner = 'none'  # Each method brings its own pruning.
  for method in methods:
    # A fresh copy of the original ViT for every method (training donates its params).
    _, start, _ = common.load_vit(config, config.init.vit_dir, mesh)
    if method == 'none':
      pruner, execution = None, 'compact'
    elif method == 'policy':
      if config.finetune.train_on == 'deployed' or spec.action_mode == 'budget':
        # Budget mode: its own decision is the filled top-k, which is what deploys.
        pruner, execution = dataclasses.replace(deployed, threshold=None), 'compact'
      else:
        uncapped = policies.uncapped(vit_cfg)
        pruner = policies.policy_pruner(spec, vit_cfg, actor, actor_params, uncapped)
        execution = 'mask'
    else:
      pruner, execution = pruning.at_capacities(method, vit_cfg, capacities), 'compact'
    sub = os.path.join(workdir, method)
    state, metrics = train.train_and_evaluate(
      config, sub, init=(model, start), pruner=pruner, prune_execution=execution
    )
    if 'halted_at_step' in metrics:
      return dict(metrics, method=method)
    tuned, tuned_step = _tuned_params(config, sub, state, metrics, mesh)
    trained[method] = {'checkpoint_step': int(tuned_step), 'train_time_s': metrics['train_time_s']}
    if method == 'policy':
      learned = deployed  # At the capacities every method shares.
      label = '' if budget is None else f'@b={budget:g}'
      rows = _scored(config, model, tuned, learned, f'{spec.kind}{label}', split, mesh)
      if learned.threshold is None and spec.kind == 'two_agent':
        own = dataclasses.replace(learned, threshold=0.0)
        rows += _scored(config, model, tuned, own, f'{spec.kind} (own votes)', split, mesh)
      elif learned.threshold is not None:
        fill = dataclasses.replace(learned, threshold=None)
        rows += _scored(config, model, tuned, fill, f'{spec.kind}+fill', split, mesh)
    else:
      eval_pruner = None if method == 'none' else pruning.at_capacities(method, vit_cfg, capacities)
      rows = _scored(config, model, tuned, eval_pruner, method, split, mesh)
    for r in rows:
      r.update(
        method=method,
        finetuned=True,
        capacities=list(capacities) if method != 'none' else None,
        trained_on=execution if pruner is not None else 'unpruned',
        workdir=sub,
      )
    records += rows
  full = pruning.gflops(vit_cfg, [vit_cfg.num_tokens] * vit_cfg.num_layers)
  summary = {
    'policy': spec.kind,
    'action_mode': spec.action_mode,
    'budget': budget,
    'capacities': list(capacities),
    'capacities_gflops_ratio': pruning.gflops(vit_cfg, capacities) / full,
    'train_on': config.finetune.train_on,
    'split': split,
    'epochs': config.train.num_epochs,
    'trained': trained,
    f'original_unpruned_{split}_accuracy': original.accuracy,
    f'original_unpruned_{split}_macro_f1': original.macro_f1,
    **common.provenance(config),
  }
  table = compare.markdown_table(
    records,
    f'Each method fine-tuned on its own pruning ({config.train.num_epochs} epochs, same recipe) '
    f'and scored on its own copy, {config.data.name} {split} split; the original ViT unpruned: '
    f'{100 * original.accuracy:.2f} %',
  )
  common.write_records(workdir, 'finetune_comparison', records, summary, table)
  common.print_table(table)
  return dict(summary, records=records)
