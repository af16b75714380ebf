"""`mode=train_policy`: learn a pruning policy for a frozen, reused ViT, then compare it.

Set-up (the ViT from `init.vit_dir`, the game of `game.policy`, the networks), restore-or-init the
policy from `<workdir>/policy`, one flat loop of jitted MAPPO updates (each: a rollout over a batch
of training images, with one budget per image in budget mode, GAE, PPO epochs) with metrics and
checkpoints when `itstime`. In budget mode each checkpoint is scored on the validation split at
`deploy.budgets` and the best one is kept in `<workdir>/policy/best` (and reported); free mode
reports the last. At the end, on `eval.split`: the deployed pruner (free mode: capacities from the
validation split; budget mode: those of each budget) against the unpruned model, random (over
`deploy.random_seeds` seeds) and cls_attention at exactly its per-layer token counts (matched
GFLOPs). Writes `train_policy_results.{json,csv,md}`.
"""

import dataclasses
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from vitprune_jax import checkpoints, parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare, evaluate
from vitprune_jax.jobs import common
from vitprune_jax.models import vit
from vitprune_jax.rl import learner, policies
from vitprune_jax.training import loop

LAGRANGE_KEY = 'lagrange_multiplier'  # Checkpoint metadata: the RCPO multiplier.


def ppo_config(config: ml_collections.ConfigDict) -> learner.PPOConfig:
  return learner.PPOConfig(**{k: config.ppo[k] for k in learner.PPOConfig._fields})


def policy_spec(
  config: ml_collections.ConfigDict, vit_cfg: vit.ViTConfig, vit_checkpoint: str
) -> policies.PolicySpec:
  """The game `config.game` describes, as the typed spec saved with the policy."""
  g = config.game
  points = g.pruning_points if g.policy == 'mappo' else (g.two_agent_point,)
  key = 'game.pruning_points' if g.policy == 'mappo' else 'game.two_agent_point'
  try:
    return policies.make_spec(
      g.policy,
      vit_cfg,
      points=points,
      hidden_size=config.ppo.hidden_size,
      accuracy_weight=g.accuracy_weight,
      efficiency_weight=g.efficiency_weight,
      accuracy_clip=g.accuracy_clip,
      target_prune_ratio=g.target_prune_ratio,
      ratio_penalty=g.ratio_penalty,
      vit_checkpoint=vit_checkpoint,
      action_mode=g.action_mode,
      budget_schedule=g.budget_schedule,
      budget_alpha=g.budget_alpha,
      budget_range=tuple(g.budget_range),
      merge_dropped=g.merge_dropped,
      similarity_prior=g.similarity_prior,
    )
  except UserError as e:
    raise UserError(f'--config.{key}: {e}') from e


def _on_validation(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  pruner: pruning.Pruner,
  mesh: jax.sharding.Mesh,
  execution: str,
) -> evaluate.EvalResult:
  """`pruner` over the validation split with the config's seed."""
  return evaluate.evaluate_params(
    model,
    params,
    common.split_batches(config, 'validation')(),
    mesh=mesh,
    pruner=pruner,
    execution=execution,
    rng=jax.random.PRNGKey(config.seed),
  )


def deployed_pruner(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  actor: Any,
  actor_params: Any,
  spec: policies.PolicySpec,
  mesh: jax.sharding.Mesh,
  budget: Optional[float] = None,
) -> pruning.Pruner:
  """The policy as a compact-mode pruner: free mappo's capacities measured on the validation
  split, a budget-mode policy's those of `budget` (default: the first of `deploy.budgets`)."""
  vit_cfg = model.config
  if spec.action_mode == 'budget' and budget is None:
    budget = config.deploy.budgets[0]
  probe = policies.probe_pruner(spec, vit_cfg, actor, actor_params)
  kept = None
  if probe is not None:  # Capacities from what the policy keeps on validation images.
    kept = _on_validation(config, model, params, probe, mesh, 'mask').kept_counts
  try:
    return policies.deployed_pruner(
      spec,
      vit_cfg,
      actor,
      actor_params,
      kept,
      quantile=config.deploy.capacity_quantile,
      bucket=config.deploy.capacity_bucket,
      budget=budget,
    )
  except ValueError as e:
    raise UserError(f'--config.deploy.budgets={tuple(config.deploy.budgets)}: {e}.') from e


def deploy_budgets(config: ml_collections.ConfigDict, spec: policies.PolicySpec) -> list:
  """The budgets a policy is deployed at: `deploy.budgets` in budget mode, [None] in free mode."""
  return list(config.deploy.budgets) if spec.action_mode == 'budget' else [None]


def validation_accuracy(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  actor: Any,
  actor_params: Any,
  spec: policies.PolicySpec,
  mesh: jax.sharding.Mesh,
) -> float:
  """Mean validation accuracy of the deployed policy over `deploy.budgets` (checkpoint choice)."""
  accuracies = []
  for budget in deploy_budgets(config, spec):
    pruner = deployed_pruner(config, model, params, actor, actor_params, spec, mesh, budget)
    result = _on_validation(config, model, params, pruner, mesh, config.prune.execution)
    accuracies.append(result.accuracy)
  return float(np.mean(accuracies))


def train_budgets(
  spec: policies.PolicySpec, seed: int, update: int, num_envs: int
) -> Optional[np.ndarray]:
  """Budget mode: one budget per image of update `update`, uniform in `spec.budget_range` and a
  function of (seed, update, process) only, so a resumed run draws the same; else None."""
  if spec.action_mode != 'budget':
    return None
  rng = np.random.default_rng([seed, update, jax.process_index()])
  return rng.uniform(*spec.budget_range, size=num_envs).astype(np.float32)


def compute_target(config: ml_collections.ConfigDict, spec: policies.PolicySpec) -> float:
  """`game.compute_target` (0 = a fixed efficiency weight); a UserError outside free mappo."""
  target = float(config.game.compute_target)
  if target > 0 and (spec.kind != 'mappo' or spec.action_mode != 'free'):
    raise UserError(
      f'--config.game.compute_target={target:g} constrains free-mode mappo only (a budget fixes '
      'the compute, two_agent has target_prune_ratio): set it to 0 or use game.policy=mappo, '
      'game.action_mode=free.'
    )
  return target


def learned_pruners(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  mesh: jax.sharding.Mesh,
  wanted: list[str],
) -> dict[str, pruning.Pruner]:
  """The deployed pruners of the policies in `init.policy_dirs`, by kind, for the names in
  `wanted`."""
  if not wanted:
    return {}
  if not config.init.policy_dirs:
    raise UserError(
      f'Pruner {wanted[0]!r} is a learned policy: set --config.init.policy_dirs to its '
      'train_policy workdir, e.g. --config.init.policy_dirs="(\'runs/fashion_mappo\',)".'
    )
  found = {}
  for path in config.init.policy_dirs:
    actor, actor_params, spec = policies.load_policy(path, model, params, mesh)
    found[spec.kind] = deployed_pruner(config, model, params, actor, actor_params, spec, mesh)
  missing = [n for n in wanted if n not in found]
  if missing:
    raise UserError(
      f'No {missing[0]} policy in --config.init.policy_dirs={tuple(config.init.policy_dirs)}; '
      f'train one with mode=train_policy and game.policy={missing[0]}.'
    )
  return found


def policy_records(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  learned: pruning.Pruner,
  mesh: jax.sharding.Mesh,
  split: str,
  *,
  label: str = '',
  with_unpruned: bool = True,
) -> list[dict[str, Any]]:
  """The policy against random (over `deploy.random_seeds` seeds, mean and 95 % CI) and
  cls_attention at its exact capacities, and the unpruned model (`with_unpruned`).

  A policy whose deployment fills its capacities (threshold None: budget mode, two_agent) is also
  evaluated on its own per-image decisions (threshold 0) when those differ; a free-mode policy is
  also evaluated with its scores filling the capacities (`+fill`, same GFLOPs, more tokens).
  `label` is appended to every name (e.g. '@b=0.75').
  """
  name = f'{learned.name}{label}'
  if learned.threshold is None:  # Filled is the deployment.
    variants = [(name, learned)]
    if learned.name == 'two_agent':  # Its own votes.
      variants.append((f'{name} (own votes)', dataclasses.replace(learned, threshold=0.0)))
  else:
    variants = [(name, learned), (f'{name}+fill', dataclasses.replace(learned, threshold=None))]
  cls_matched = dataclasses.replace(
    pruning.at_capacities('cls_attention', model.config, learned.budget),
    name=f'cls_attention@matched{label}',
  )
  named = ([('none', None)] if with_unpruned else []) + [(cls_matched.name, cls_matched)]
  records = common.compare_on_split(
    config,
    model,
    params,
    named + variants,
    split,
    mesh,
    throughput_repeats=config.eval.throughput_repeats,
    warm=with_unpruned,
  )
  random_matched = dataclasses.replace(
    pruning.at_capacities('random', model.config, learned.budget), name=f'random@matched{label}'
  )
  per_seed = []
  for i in range(config.deploy.random_seeds):
    per_seed += common.compare_on_split(
      config,
      model,
      params,
      [(random_matched.name, random_matched)],
      split,
      mesh,
      throughput_repeats=0,
      warm=False,
      seed=config.seed + i,
    )
  position = 1 if with_unpruned else 0
  records.insert(position, compare.mean_over_seeds(per_seed, random_matched.name))
  for r in records:
    r['capacities'] = list(learned.budget)
  return records


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  mesh = parallel.make_mesh()
  common.check_batch(config, 'ppo.num_envs')
  common.check_batch(config, 'eval.batch_size')
  if not config.init.vit_dir:
    raise UserError('train_policy needs a trained ViT: set --config.init.vit_dir to a train run.')
  model, params, vit_meta = common.load_vit(config, config.init.vit_dir, mesh)
  vit_cfg = model.config
  spec = policy_spec(config, vit_cfg, vit_meta['checkpoint_dir'])
  env = policies.make_env(model, params, spec)
  ppo = ppo_config(config)
  actor, critic = policies.make_networks(spec)
  spec_data = common.data_spec(config)
  info = input_pipeline.get_info(spec_data)
  p = config.ppo
  group = learner.shuffle_group(env.num_steps, p.num_minibatches)
  devices = mesh.devices.size
  if (p.num_envs // devices * p.rollouts_per_input) % group:
    raise UserError(
      f'--config.ppo.num_envs={p.num_envs} x rollouts_per_input={p.rollouts_per_input} plays '
      f'over {devices} devices cannot be cut into {p.num_minibatches} minibatches of the '
      f'{env.num_steps} pruning steps: make the plays per device a multiple of {group}, or use a '
      f'number of minibatches that divides {env.num_steps}.'
    )
  steps_per_epoch = info.split_sizes['train'] // p.num_envs
  if steps_per_epoch == 0:
    raise UserError(
      f'ppo.num_envs={p.num_envs} exceeds the {info.split_sizes["train"]} training images.'
    )

  init_key, loop_key = jax.random.split(jax.random.PRNGKey(config.seed))
  state = policies.init_learner_state(init_key, env, actor, critic, ppo, vit_cfg, mesh)
  target = compute_target(config, spec)
  multiplier = float(config.game.efficiency_weight)  # RCPO: the Lagrange multiplier's start.
  ckpt = checkpoints.Checkpointer(f'{workdir}/{policies.POLICY_DIR}')
  if ckpt.latest_step() is not None:
    nets, opt, saved_meta = ckpt.restore_latest(*policies.to_checkpoint(state))
    saved = policies.PolicySpec.from_meta(saved_meta)
    if not spec.same_game(saved):
      raise checkpoints.CheckpointError(
        f'The policy checkpoint in {workdir} is a {saved.kind} policy of another game (points '
        f'{saved.points}, target {saved.target_prune_ratio}); use another --workdir.'
      )
    state = policies.from_checkpoint(nets, opt)
    multiplier = float(saved_meta.get(LAGRANGE_KEY, multiplier))
    logging.info('Resumed the policy at update %d.', int(state.step))
  start = int(state.step)

  writer = common.metric_writer(workdir)
  update = jax.jit(learner.make_sharded_update(ppo, env, actor, critic, mesh), donate_argnums=(0,))
  batches = input_pipeline.train_batches(
    spec_data, global_batch_size=p.num_envs, start_step=start, steps_per_epoch=steps_per_epoch
  )
  eta = loop.Eta(start, p.num_updates)
  t0 = time.perf_counter()
  for u, batch in zip(range(start + 1, p.num_updates + 1), batches):
    local = {'image': batch['image'], 'label': batch['label']}
    budgets = train_budgets(spec, config.seed, u, batch['label'].shape[0])
    if budgets is not None:
      local['budget'] = budgets
    if target > 0:  # The multiplier is the efficiency weight of every image of this update.
      local['efficiency_weight'] = np.full(batch['label'].shape, multiplier, np.float32)
    inputs = parallel.shard_batch(local, mesh)
    state, metrics = update(state, inputs, jax.random.fold_in(loop_key, u - 1))
    if target > 0:
      metrics = dict(metrics, lagrange_multiplier=multiplier)
      multiplier = learner.lagrange_step(
        multiplier, float(metrics['kept_compute']), target, config.game.lagrange_lr
      )
    if loop.itstime(u, p.log_every_steps, p.num_updates):
      values = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(values['total_loss']):
        raise UserError(
          f'The policy loss became {values["total_loss"]} at update {u}; the last good '
          f'checkpoint in {workdir} is kept. Lower --config.ppo.actor_lr.'
        )
      writer.write_scalars(u, values)
      constrained = (
        f', kept compute {values["kept_compute"]:.3f} (target {target:g}), multiplier '
        f'{values["lagrange_multiplier"]:.4f}'
        if target > 0
        else ''
      )
      logging.info(
        'Update %d/%d: return %.3f, kept %.3f%s; %s',
        u,
        p.num_updates,
        values['episode_return'],
        values.get('kept_fraction', float('nan')),
        constrained,
        eta(u),
      )
    if loop.itstime(u, p.checkpoint_every_steps, p.num_updates):
      meta, select = spec.to_meta(), spec.action_mode == 'budget'
      if target > 0:  # The multiplier of the next update, for an exact resume.
        meta[LAGRANGE_KEY] = multiplier
      if select:  # Scored on validation; best/ keeps the top one.
        meta[checkpoints.BEST_METRIC] = validation_accuracy(
          config, model, params, actor, state.actor_params, spec, mesh
        )
        logging.info('Update %d: validation accuracy %.4f.', u, meta[checkpoints.BEST_METRIC])
        writer.write_scalars(u, {'validation_accuracy': meta[checkpoints.BEST_METRIC]})
      ckpt.save(u, *policies.to_checkpoint(state), meta, best=select)
  ckpt.wait()
  train_time = time.perf_counter() - t0

  actor_params, chosen_step = state.actor_params, int(state.step)
  best_step = ckpt.best.best_step() if spec.action_mode == 'budget' else None
  if best_step is not None:
    best = checkpoints.load_params(
      str(ckpt.best.directory), best_step, policies.to_checkpoint(state)[0]
    )
    actor_params, chosen_step = best['actor'], int(best_step)
    logging.info('Deploying the checkpoint of update %d (best on validation).', best_step)
  ckpt.close()

  records = []
  for i, budget in enumerate(deploy_budgets(config, spec)):
    learned = deployed_pruner(config, model, params, actor, actor_params, spec, mesh, budget)
    label = '' if budget is None else f'@b={budget:g}'
    records += policy_records(
      config, model, params, learned, mesh, config.eval.split, label=label, with_unpruned=i == 0
    )
  table = compare.markdown_table(
    records,
    f'{spec.kind} policy vs matched-count heuristics, {config.data.name} {config.eval.split} split',
  )
  summary = {
    'policy': spec.kind,
    'action_mode': spec.action_mode,
    'split': config.eval.split,
    'updates': p.num_updates,
    'deployed_update': chosen_step,
    'compute_target': target,
    'lagrange_multiplier': multiplier if target > 0 else None,
    'train_time_s': round(train_time, 1),
    'vit_checkpoint': vit_meta['checkpoint_dir'],
  }
  common.write_records(workdir, 'train_policy_results', records, summary, table)
  common.print_table(table)
  writer.close()
  return dict(summary, records=records)
