"""`mode=finetune`: fine-tune one copy of the ViT per method, each on its own pruning, then compare.

The policy (the first of `init.policy_dirs`) is frozen and fixes the per-layer capacities: a
budget-mode policy's at the first of `deploy.budgets`, a free-mode or two-agent policy's its
deployed ones (bucketed on validation). Each of `finetune.methods` then fine-tunes its own copy of
the ViT (`init.vit_dir`) in `<workdir>/<method>`, same epochs and recipe (`train.*`), and is scored
on its own copy:
- 'none': unpruned, the reference (the ViT fine-tuned for the same epochs);
- a heuristic (`random`, `similarity`, `cls_attention`, ...): at the policy's capacities, compact
  mode, in training and in evaluation (random over `deploy.random_seeds` seeds in evaluation);
- a merging method, with merging in the loop in training and in evaluation, at the most GFLOPs not
  above the capacities' (the merge priced): `tome` (over its r), `evit` (over its keep rate), or a
  heuristic's drop-merge variant '<name>+merge' (`pruning.with_merging`, at the budget of a
  budget-mode policy's schedule that comes closest from below);
- steered ToMe (`pruning.steered_tome`, at ToMe's r there): 'tome+<name>' by a heuristic of
  `pruning.STEERS`, 'tome+policy' by every policy (`<workdir>/tome+policy`, `tome+policy_1`, ...;
  each at the budget it is scored at below); the weight of `finetune.steer_weights` most accurate
  on validation with the ViT before fine-tuning, then fine-tuned at it;
- 'policy': every policy of `init.policy_dirs` (`<workdir>/policy`, `policy_1`, ...; later ones
  budget-mode, on the first one's schedule). `finetune.train_on` picks what the first one's ViT sees
  while it trains: 'policy' (RL4EViT: the policy's own per-image decisions, mask mode) or
  'deployed' (exactly what inference runs, compact mode, capacities filled by the policy's scores).
  It is scored deployed at the shared capacities and, where they differ, on its own decisions
  inside them (free mode) or filled (two_agent: its own votes). A budget-mode policy trains and is
  scored as deployed; one trained in the drop-merge game (`game.merge_dropped`) merging, at the
  drop-merge budget.
The best fine-tuned policy is tested against the best fine-tuned heuristic and the best merging
method on the same test images (McNemar, `evaluation.pareto.paired_tests`).
Everything else is `mode=train` (optimizer, checkpoints, resume). Writes
`finetune_comparison.{json,csv,md}` with every record marked `finetuned`, beside the original
ViT's unpruned accuracy.
"""

import dataclasses
import os
from typing import Any, Optional

import jax
import ml_collections

from vitprune_jax import parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare, evaluate
from vitprune_jax.evaluation import pareto as pareto_lib
from vitprune_jax.jobs import common, train, train_policy
from vitprune_jax.jobs import pareto as pareto_job
from vitprune_jax.rl import policies

MERGE = '+merge'
STEERED = 'tome+'


def known_methods() -> tuple[str, ...]:
  heuristics = tuple(n for n in pruning.PRUNERS if n != 'none' and n not in pruning.MERGERS)
  drop_merge = tuple(f'{n}{MERGE}' for n in heuristics if n != 'greedy')
  steered = tuple(f'{STEERED}{n}' for n in pruning.STEERS + ('policy',))
  return ('none', 'policy') + heuristics + pruning.MERGERS + drop_merge + steered


def check_methods(methods: tuple[str, ...]) -> None:
  known = known_methods()
  if not methods:
    raise UserError(f'--config.finetune.methods is empty; choose from: {", ".join(known)}.')
  for m in methods:
    if m not in known:
      raise UserError(
        f'--config.finetune.methods: unknown method {m!r}; choose from: {", ".join(known)}.'
      )


def needs_drop_merge(methods: tuple[str, ...], specs) -> bool:
  """Whether `methods` run drop-merge: a '<heuristic>+merge', or a policy (scored itself or as
  the steer of 'tome+policy') trained with merging of the dropped tokens."""
  uses_policies = any(m in methods for m in ('policy', f'{STEERED}policy'))
  return any(m.endswith(MERGE) for m in methods) or (
    uses_policies and any(s.merge_dropped for s in specs)
  )


def family(method: str) -> str:
  """A method's family, as in the Pareto job: none, random, heuristic, merging or learned."""
  if method == 'none' or method.startswith('random'):
    return 'none' if method == 'none' else 'random'
  if method.startswith('policy') or method.startswith(f'{STEERED}policy'):
    return 'learned'
  merging = method in pruning.MERGERS or method.endswith(MERGE) or method.startswith(STEERED)
  return 'merging' if merging else 'heuristic'


def _tuned_params(config, workdir, state, metrics, mesh):
  """The fine-tuned params chosen on validation: the final ones, unless an earlier epoch was better
  (read back from `best/`)."""
  if metrics['best_step'] == int(state.step):
    return state.params, metrics['best_step']
  _, tuned, meta = common.load_vit(config, workdir, mesh)
  return tuned, meta['checkpoint_step']


def _scored(config, model, params, pruner, name, split, mesh) -> list[dict[str, Any]]:
  """Records of one method on its own tuned copy (a random pruner over its seeds), with the
  per-example hits of every seed (`seed_correct`; `correct`: the first seed's)."""
  seeds = (
    config.deploy.random_seeds if pruner is not None and pruner.name.startswith('random') else 1
  )
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
      with_correct=True,
    )[0]
    for i in range(seeds)
  ]
  merged = compare.mean_over_seeds(rows, name) if seeds > 1 else dict(rows[0], seeds=1)
  merged.update(correct=rows[0]['correct'], seed_correct=[r['correct'] for r in rows])
  return [merged]


def _loaded_policies(config, model, params, mesh, budget, capacities):
  """(label, actor, actor_params, spec) of every policy after the first; each must be a budget-mode
  policy whose capacities at `budget` are the first one's."""
  found = []
  for d in config.init.policy_dirs[1:]:
    actor, actor_params, spec = policies.load_policy(d, model, params, mesh)
    caps = None
    if spec.action_mode == 'budget' and budget is not None:
      caps = tuple(policies.budget_capacities(model.config, spec, budget))
    if caps != tuple(capacities):
      raise UserError(
        f'--config.init.policy_dirs: {d} is a {spec.action_mode}-mode policy with capacities '
        f"{caps} at b={budget}, not the first policy's {tuple(capacities)}; fine-tune it with "
        'budget-mode policies of one schedule.'
      )
    found.append((pareto_job.policy_label(spec), actor, actor_params, spec))
  return found


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if not config.init.vit_dir or not config.init.policy_dirs:
    raise UserError(
      'finetune needs --config.init.vit_dir (the ViT run) and --config.init.policy_dirs '
      '(the train_policy run).'
    )
  made_by = common.provenance(config)  # Before anything can change the tree.
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
  others = _loaded_policies(config, model, params, mesh, budget, capacities)
  full = pruning.gflops(vit_cfg, [vit_cfg.num_tokens] * vit_cfg.num_layers)
  level = pruning.gflops(vit_cfg, capacities) / full
  b_merge: Optional[float] = None
  if needs_drop_merge(methods, [spec] + [o[-1] for o in others]):
    if budget is None:
      raise UserError(
        'finetune: drop-merge methods need a budget-mode first policy (its schedule gives the '
        'drop-merge capacities); put one first in --config.init.policy_dirs.'
      )
    try:
      b_merge = pareto_job.drop_merge_budget(vit_cfg, spec, level, full)
    except ValueError as e:
      raise UserError(f'finetune: drop-merge at {level:.3f}x GFLOPs: {e}.') from e
  split = config.eval.split
  common.warm_up(common.split_batches(config, split))
  original = evaluate.evaluate_params(
    model, params, common.split_batches(config, split)(), mesh=mesh, rng=jax.random.PRNGKey(0)
  )
  policy_plans = _policy_plans(
    config, vit_cfg, spec, actor, actor_params, deployed, others, budget, b_merge
  )
  # (workdir name, training pruner, its execution, [(record name, evaluation pruner)], options)
  plans = []
  for method in methods:
    if method == 'none':
      plans.append((method, None, 'compact', [('none', None)], {}))
    elif method == 'policy':
      plans += policy_plans
    elif method in pruning.MERGERS:
      pruner, options = pareto_job.merger_at(method, vit_cfg, level, full)
      plans.append((method, pruner, 'compact', [(method, pruner)], options))
    elif method.startswith(STEERED):
      plans += _steered_plans(
        config, model, params, mesh, method, level, full, capacities, policy_plans
      )
    elif method.endswith(MERGE):
      caps = policies.budget_capacities(vit_cfg, spec, b_merge)
      pruner = pruning.with_merging(pruning.at_capacities(method[: -len(MERGE)], vit_cfg, caps))
      plans.append((method, pruner, 'compact', [(method, pruner)], {'budget': b_merge}))
    else:
      pruner = pruning.at_capacities(method, vit_cfg, capacities)
      plans.append((method, pruner, 'compact', [(method, pruner)], {}))
  records, trained = [], {}
  config = config.copy_and_resolve_references()
  config.train.pruner = 'none'  # Each method brings its own pruning.
  for sub_name, pruner, execution, scored, options in plans:
    # A fresh copy of the original ViT for every method (training donates its params).
    _, start, _ = common.load_vit(config, config.init.vit_dir, mesh)
    sub = os.path.join(workdir, sub_name)
    state, metrics = train.train_and_evaluate(
      config, sub, init=(model, start), pruner=pruner, prune_execution=execution
    )
    if 'halted_at_step' in metrics:
      return dict(metrics, method=sub_name)
    tuned, tuned_step = _tuned_params(config, sub, state, metrics, mesh)
    trained[sub_name] = {
      'checkpoint_step': int(tuned_step),
      'train_time_s': metrics['train_time_s'],
    }
    for name, eval_pruner in scored:
      for r in _scored(config, model, tuned, eval_pruner, name, split, mesh):
        r.update(
          method=sub_name,
          family=family(sub_name),
          finetuned=True,
          capacities=list(eval_pruner.budget) if eval_pruner is not None else None,
          trained_on=execution if pruner is not None else 'unpruned',
          workdir=sub,
          options=options,
        )
        records.append(r)
  tests = pareto_lib.paired_tests([dict(r, method=r['pruner']) for r in records], round(level, 4))
  for r in records:
    r.pop('correct', None)
    r.pop('seed_correct', None)
  summary = {
    'policy': spec.kind,
    'action_mode': spec.action_mode,
    'budget': budget,
    'drop_merge_budget': b_merge,
    'capacities': list(capacities),
    'capacities_gflops_ratio': level,
    'train_on': config.finetune.train_on,
    'split': split,
    'epochs': config.train.num_epochs,
    'trained': trained,
    'paired_tests': tests,
    'policy_dirs': list(config.init.policy_dirs),
    f'original_unpruned_{split}_accuracy': original.accuracy,
    f'original_unpruned_{split}_macro_f1': original.macro_f1,
    **made_by,
  }
  table = compare.markdown_table(
    records,
    f'Each method fine-tuned on its own pruning ({config.train.num_epochs} epochs, same recipe) '
    f'and scored on its own copy, {config.data.name} {split} split; the original ViT unpruned: '
    f'{100 * original.accuracy:.2f} %',
  )
  table += ''.join(
    f'\nPaired (McNemar, exact): {t["learned"]} vs {t["baseline"]} ({t["against"]}): '
    f'{100 * t["difference"]:+.2f} pt, {t["a_only"]} vs {t["b_only"]} images only one gets '
    f'right, p = {t["p_value"]:.2g}.\n'
    for t in tests
  )
  common.write_records(workdir, 'finetune_comparison', records, summary, table)
  common.print_table(table)
  return dict(summary, records=records)


def _steered_plans(config, model, params, mesh, method, level, full, capacities, policy_plans):
  """The plans of steered ToMe 'tome+<heuristic>' or 'tome+policy' (one per policy, steered by
  the pruner its policy plan scores first), at ToMe's r for `level`, each at its weight chosen on
  validation."""
  tome, options = pareto_job.merger_at('tome', model.config, level, full)
  del tome
  steer = method[len(STEERED) :]
  if steer == 'policy':
    scorers = [(f'{STEERED}{scored[0][0]}', scored[0][1]) for _, _, _, scored, _ in policy_plans]
    subs = [f'{STEERED}{sub}' for sub, *_ in policy_plans]
  else:
    scorers = [(method, pruning.at_capacities(steer, model.config, capacities))]
    subs = [method]
  chosen = pareto_job.choose_steer_weights(
    config,
    model,
    params,
    mesh,
    options['r'],
    scorers,
    tuple(float(w) for w in config.finetune.steer_weights),
    'validation',
  )
  return [
    (
      sub,
      pruner,
      'compact',
      [(pruner.name, pruner)],
      dict(options, steer_weight=w, validation_accuracy=tried),
    )
    for sub, (pruner, w, tried) in zip(subs, chosen)
  ]


def _policy_plans(config, vit_cfg, spec, actor, actor_params, deployed, others, budget, b_merge):
  """The plans of 'policy': the first policy as before (`finetune.train_on`), then every other
  (budget mode) trained and scored as deployed, merging at `b_merge` if trained merging."""
  label = '' if budget is None else f'@b={budget:g}'
  name = pareto_job.policy_label(spec)
  if spec.merge_dropped:
    first = policies.deployed_pruner(
      spec, vit_cfg, actor, actor_params, quantile=1.0, bucket=1, budget=b_merge
    )
    plans = [('policy', first, 'compact', [(f'{name}@b={b_merge:g}', first)], {'budget': b_merge})]
  else:
    if config.finetune.train_on == 'deployed' or spec.action_mode == 'budget':
      # Budget mode: its own decision is the filled top-k, which is what deploys.
      pruner, execution = dataclasses.replace(deployed, threshold=None), 'compact'
    else:
      uncapped = policies.uncapped(vit_cfg)
      pruner = policies.policy_pruner(spec, vit_cfg, actor, actor_params, uncapped)
      execution = 'mask'
    scored = [(f'{spec.kind}{label}', deployed)]  # At the capacities every method shares.
    if deployed.threshold is None and spec.kind == 'two_agent':
      scored.append((f'{spec.kind} (own votes)', dataclasses.replace(deployed, threshold=0.0)))
    elif deployed.threshold is not None:
      scored.append((f'{spec.kind}+fill', dataclasses.replace(deployed, threshold=None)))
    plans = [('policy', pruner, execution, scored, {'budget': budget})]
  for i, (name, actor_i, params_i, spec_i) in enumerate(others, 1):
    b = b_merge if spec_i.merge_dropped else budget
    pruner = policies.deployed_pruner(
      spec_i, vit_cfg, actor_i, params_i, quantile=1.0, bucket=1, budget=b
    )
    plans.append((f'policy_{i}', pruner, 'compact', [(f'{name}@b={b:g}', pruner)], {'budget': b}))
  return plans
