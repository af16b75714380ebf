"""`mode=pareto`: every method on one checkpoint at matched GFLOPs levels, one table and one figure.

For each of `pareto.levels` (shares of the unpruned GFLOPs) the budget b of the budget game
`game.*` (its pruning points, schedule and alpha) whose capacities come closest to the level from
below fixes the per-layer capacities, and every method runs exactly those on `eval.split`, in
compact mode:
- `none` (once);
- `random` over `deploy.random_seeds` seeds (mean and 95 % t CI);
- the heuristics of `pareto.methods` (`greedy` keeps its one-shot rule at no more GFLOPs);
- the merging methods of `pareto.mergers` (ToMe over its r, EViT over its keep rate), each at its
  own token counts with the most GFLOPs not above those of the level's capacities;
- the budget-mode policies of `init.policy_dirs`, each on its own decisions at budget b (one trained
  policy serves every level); several runs of one kind are its seeds (mean and CI);
- with `pareto.drop_merge`, the drop-merge variant ('<name>+merge', `pruning.with_merging`: what is
  not kept merges into the kept tokens) of random, of every heuristic but greedy (one shot, its own
  counts) and of every policy, at the budget whose GFLOPs, the merge priced, come closest to b's
  from below; random+merge counts as random, the heuristics' variants as merging, the policies'
  as learned. A policy trained in the drop-merge game (`game.merge_dropped`) runs only so, at that
  budget, as '<kind>+merge (trained)' (`policy_label`).
- with `pareto.steer_weights`, steered ToMe (`pruning.steered_tome`: ToMe at the level's r, its
  matching sparing the tokens a score ranks high) by every heuristic of `pareto.methods` in
  `pruning.STEERS` ('tome+<name>', merging) and by every policy ('tome+<label>', learned, at the
  budget the policy runs at), each at the weight of `pareto.steer_weights` most accurate on
  `pareto.select_split` (chosen per method, seed and level; the record's options hold r and, per
  seed, the weight and every weight's accuracy there).
At each level the best learned method is tested against the best heuristic and the best merging
method, paired on the same images (McNemar's exact test; for a learned method with several seeds,
each seed's run, the largest p-value reported). Writes `pareto.{json,csv,md}` and `pareto.png`;
the JSON also holds the command, the config and the git commit that made it.
"""

import collections
import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from vitprune_jax import parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare
from vitprune_jax.evaluation import pareto as pareto_lib
from vitprune_jax.jobs import common
from vitprune_jax.rl import policies, pruning_env


def schedule_spec(config: ml_collections.ConfigDict, vit_cfg) -> policies.PolicySpec:
  """The budget game of `game.*` whose capacities every method shares."""
  g = config.game
  points = tuple(g.pruning_points) or pruning_env.default_points(vit_cfg.num_layers)
  try:
    points = pruning_env.check_points(vit_cfg.num_layers, points)
  except ValueError as e:
    raise UserError(f'--config.game.pruning_points: {e}.') from e
  return policies.PolicySpec(
    kind='mappo',
    points=points,
    action_mode='budget',
    budget_schedule=g.budget_schedule,
    budget_alpha=g.budget_alpha,
  )


def check_methods(methods: tuple[str, ...]) -> None:
  heuristics = [n for n in pruning.PRUNERS if n not in ('none', 'random') + pruning.MERGERS]
  for m in methods:
    if m not in heuristics:
      raise UserError(
        f'--config.pareto.methods: {m!r} is not a heuristic; choose from: {", ".join(heuristics)} '
        '(none and random are always in; learned policies come from --config.init.policy_dirs).'
      )


def policy_label(spec: policies.PolicySpec) -> str:
  """A policy's method name: its kind, '+merge (trained)' if trained in the drop-merge game, and
  ', similarity prior' in brackets if its actor has one. Runs of one label are its seeds."""
  prior = 'similarity prior' if spec.similarity_prior else ''
  if spec.merge_dropped:
    return f'{spec.kind}+merge (trained{", " + prior if prior else ""})'
  return f'{spec.kind} ({prior})' if prior else spec.kind


def load_policies(config, model, params, mesh, sched: policies.PolicySpec) -> list:
  """(label, actor, actor params, spec) of every policy dir; each must be a budget-mode policy of
  the same schedule as `sched`."""
  found = []
  for path in config.init.policy_dirs:
    actor, actor_params, spec = policies.load_policy(path, model, params, mesh)
    same = (spec.points, spec.budget_schedule, spec.budget_alpha) == (
      sched.points,
      sched.budget_schedule,
      sched.budget_alpha,
    )
    if spec.action_mode != 'budget' or not same:
      raise UserError(
        f'The policy in {path} is a {spec.action_mode}-mode {spec.kind} policy at points '
        f'{spec.points} ({spec.budget_schedule} schedule); the Pareto job runs budget-mode '
        f'policies at its levels, with the capacities of --config.game (points {sched.points}, '
        f"{sched.budget_schedule} schedule): set those to the policy's, or compare it with "
        'mode=evaluate.'
      )
    found.append((policy_label(spec), actor, actor_params, spec))
  return found


def merger_at(name: str, vit_cfg, target: float, full: float) -> tuple[pruning.Pruner, dict]:
  """ToMe (over its r) or EViT (over its keep rate, at its default layers) at the most GFLOPs not
  above `target` (a share of the unpruned `full`), and that option."""
  if name == 'tome':
    build, grid = (
      (lambda r: pruning.make_pruner('tome', vit_cfg, r=int(r))),
      range(vit_cfg.num_tokens),
    )
  else:
    build = lambda k: pruning.make_pruner('evit', vit_cfg, keep_rate=float(k))
    grid = np.round(np.arange(1, 101) / 100, 2)
  cost = lambda v: pruning.gflops(vit_cfg, build(v).budget, name) / full
  try:
    option, _ = pareto_lib.budget_for_level(cost, target, grid=list(grid))
  except ValueError as e:
    raise UserError(f'--config.pareto.mergers: {name} cannot reach {target:.3f}x: {e}.') from e
  return build(option), ({'r': int(option)} if name == 'tome' else {'keep_rate': float(option)})


def drop_merge_budget(vit_cfg, spec: policies.PolicySpec, target: float, full: float) -> float:
  """The budget of `spec`'s schedule whose drop-merge GFLOPs (the merge priced) come closest to
  `target` (a share of the unpruned `full`) from below; ValueError when none reaches it."""

  def merge_ratio(b: float) -> float:
    caps = policies.budget_capacities(vit_cfg, spec, b)
    return pruning.gflops(vit_cfg, caps, 'drop_merge') / full

  return pareto_lib.budget_for_level(merge_ratio, target)[0]


def choose_steer_weights(
  config, model, params, mesh, r: int, scorers: list, weights: tuple[float, ...], split: str
) -> list[tuple[pruning.Pruner, float, dict[str, float]]]:
  """For each (name, scoring pruner) of `scorers`: ToMe at r steered by it at the weight of
  `weights` most accurate on `split` (the first of equals), renamed `name`; that weight; and every
  weight's accuracy there (keyed by str(weight))."""
  candidates = [
    (f'{i}:{w}', pruning.steered_tome(model.config, r, by, w))
    for i, (_, by) in enumerate(scorers)
    for w in weights
  ]
  records = common.compare_on_split(
    config, model, params, candidates, split, mesh, throughput_repeats=0
  )
  accuracy = {rec['pruner']: rec['accuracy'] for rec in records}
  chosen = []
  for i, (name, by) in enumerate(scorers):
    tried = {str(w): accuracy[f'{i}:{w}'] for w in weights}
    best = max(weights, key=lambda w: tried[str(w)])  # max keeps the first of equals.
    pruner = dataclasses.replace(pruning.steered_tome(model.config, r, by, best), name=name)
    chosen.append((pruner, best, tried))
  return chosen


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  made_by = common.provenance(config)  # Before anything can change the tree.
  methods = tuple(config.pareto.methods)
  check_methods(methods)
  mergers = tuple(config.pareto.mergers)
  for m in mergers:
    if m not in pruning.MERGERS:
      raise UserError(
        f'--config.pareto.mergers: {m!r} is not a merging method; choose from: '
        f'{", ".join(pruning.MERGERS)}.'
      )
  steer_weights = tuple(float(w) for w in config.pareto.steer_weights)
  if steer_weights and 'tome' not in mergers:
    raise UserError(
      '--config.pareto.steer_weights steers ToMe at its r of each level: add tome to '
      '--config.pareto.mergers, or set --config.pareto.steer_weights=().'
    )
  levels = [float(v) for v in config.pareto.levels]
  if not levels or any(not 0.0 < v < 1.0 for v in levels):
    raise UserError(f'--config.pareto.levels={tuple(levels)}: give shares of the GFLOPs in (0, 1).')
  mesh = parallel.make_mesh()
  common.check_batch(config, 'eval.batch_size')
  model, params, meta = common.load_vit(config, config.init.vit_dir or workdir, mesh)
  vit_cfg = model.config
  sched = schedule_spec(config, vit_cfg)
  learned = load_policies(config, model, params, mesh, sched)
  full = pruning.gflops(vit_cfg, [vit_cfg.num_tokens] * vit_cfg.num_layers)

  def ratio(b: float) -> float:
    return pruning.gflops(vit_cfg, policies.budget_capacities(vit_cfg, sched, b)) / full

  split, repeats = config.eval.split, config.eval.throughput_repeats
  common.warm_up(common.split_batches(config, split))
  records, tests = [], []
  for index, level in enumerate(levels):
    try:
      b, _ = pareto_lib.budget_for_level(ratio, level)
    except ValueError as e:
      raise UserError(f'--config.pareto.levels: {e} with the {sched.budget_schedule} schedule.')
    caps = policies.budget_capacities(vit_cfg, sched, b)
    logging.info('Level %g: budget b=%g, capacities %s.', level, b, caps)
    named = [('none', None), ('random', pruning.at_capacities('random', vit_cfg, caps))]
    named += [(m, pruning.at_capacities(m, vit_cfg, caps)) for m in methods]
    families = ['none', 'random'] + ['heuristic'] * len(methods)
    b_merge = None
    if config.pareto.drop_merge or any(spec.merge_dropped for *_, spec in learned):
      # The budget whose drop-merge GFLOPs (the merge is priced) come closest to b's from below.
      try:
        b_merge = drop_merge_budget(vit_cfg, sched, ratio(b), full)
      except ValueError as e:
        raise UserError(f'--config.pareto.levels: drop-merge at {level:g}: {e}.') from e
    if config.pareto.drop_merge:
      merge_caps = policies.budget_capacities(vit_cfg, sched, b_merge)
      for m in ('random',) + tuple(v for v in methods if v != 'greedy'):
        pruner = pruning.with_merging(pruning.at_capacities(m, vit_cfg, merge_caps))
        named.append((pruner.name, pruner))
        families.append('random' if m == 'random' else 'merging')
    options = {}
    for m in mergers:  # Their own token counts, at the most GFLOPs not above the level's.
      pruner, options[m] = merger_at(m, vit_cfg, ratio(b), full)
      named.append((m, pruner))
      families.append('merging')
    steerers = [(f'tome+{m}', 'merging', pruning.at_capacities(m, vit_cfg, caps)) for m in methods]
    steerers = [s for s in steerers if s[0][len('tome+') :] in pruning.STEERS]
    for label, actor, actor_params, spec in learned:
      # Trained in the drop-merge game: deployed so (already merging), at the drop-merge budget.
      pruner = policies.deployed_pruner(
        spec,
        vit_cfg,
        actor,
        actor_params,
        quantile=1.0,
        bucket=1,
        budget=b_merge if spec.merge_dropped else b,
      )
      named.append((label, pruner))
      families.append('learned')
      steerers.append((f'tome+{label}', 'learned', pruner))
      if config.pareto.drop_merge and not spec.merge_dropped:
        pruner = policies.deployed_pruner(
          spec, vit_cfg, actor, actor_params, quantile=1.0, bucket=1, budget=b_merge
        )
        named.append((f'{label}+merge', pruning.with_merging(pruner)))
        families.append('learned')
    if steer_weights:
      r = options['tome']['r']
      scorers = [(name, by) for name, _, by in steerers]
      chosen = choose_steer_weights(
        config, model, params, mesh, r, scorers, steer_weights, config.pareto.select_split
      )
      for (name, family, _), (pruner, weight, tried) in zip(steerers, chosen):
        named.append((name, pruner))
        families.append(family)
        # Seeds of one policy share a name: one entry per seed, in seed order.
        chose = options.setdefault(name, {'r': r, 'steer_weight': [], 'select_accuracy': []})
        chose['steer_weight'].append(weight)
        chose['select_accuracy'].append(tried)
    # One run times every method of the level in rotated order, the unpruned model included.
    level_records = common.compare_on_split(
      config,
      model,
      params,
      named,
      split,
      mesh,
      throughput_repeats=repeats,
      warm=False,
      with_correct=True,
    )
    for r, family in zip(level_records, families):
      r['family'] = family
    seeded = [nm for nm, f in zip(named, families) if f == 'random']
    extra = [
      record
      for i in range(1, config.deploy.random_seeds)
      for record in common.compare_on_split(
        config,
        model,
        params,
        seeded,
        split,
        mesh,
        throughput_repeats=0,
        warm=False,
        seed=config.seed + i,
      )
    ]
    budgets = {n: p.budget if p is not None else None for n, p in named}
    budget_of = {n: (b_merge if p is not None and p.merge_dropped else b) for n, p in named}
    groups = collections.defaultdict(list)
    for r in level_records + extra:
      groups[r['pruner']].append(r)
    merged = {}
    for name, rows in groups.items():
      m = compare.mean_over_seeds(rows, name) if len(rows) > 1 else dict(rows[0], seeds=1)
      m.update(
        method=name,
        family=rows[0].get('family', 'random'),
        level=level if name != 'none' else 1.0,
        budget=budget_of[name] if name != 'none' else None,
        ci95=m.get('accuracy_ci95', 0.0),
        finetuned=False,
        capacities=list(budgets[name]) if budgets[name] else None,
        options=options.get(name, {}),
        seed_correct=[r.get('correct') for r in rows],
      )
      merged[name] = m
    tests += pareto_lib.paired_tests(list(merged.values()), level)
    for name, m in merged.items():
      if name == 'none' and index > 0:
        continue  # The unpruned model once (each level still timed it beside the others).
      records.append(m)
  for r in records:
    r.pop('correct', None)
    r.pop('seed_correct', None)
  title = (
    f'{config.data.name} {split} split ({records[0]["num_examples"]} images), checkpoint '
    f'{meta["checkpoint_dir"]}, capacities of the {sched.budget_schedule} schedule at points '
    f'{list(sched.points)}, compact mode, no fine-tuning'
  )
  table = pareto_lib.markdown(records, tests, title)
  summary = {
    'split': split,
    'dataset': config.data.name,
    'checkpoint_dir': meta['checkpoint_dir'],
    'levels': levels,
    'points': list(sched.points),
    'schedule': sched.budget_schedule,
    'paired_tests': tests,
    'policy_dirs': list(config.init.policy_dirs),
    'steer_weights': list(steer_weights),
    'select_split': config.pareto.select_split if steer_weights else None,
    'device': jax.devices()[0].device_kind,
    **made_by,
  }
  common.write_records(workdir, 'pareto', records, summary, table)
  common.save_figure(pareto_lib.plot(records, title), os.path.join(workdir, 'pareto.png'), dpi=120)
  common.print_table(table)
  return dict(summary, records=records)
