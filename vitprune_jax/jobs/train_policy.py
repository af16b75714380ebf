"""`mode=train_policy`: learn a pruning policy for a frozen, reused ViT, then compare it.

Set-up (the ViT from `init.vit_dir`, the game of `game.policy`, the networks), restore-or-init the
policy from `<workdir>/policy`, one flat loop of jitted MAPPO updates (each: a rollout over a batch
of training images, GAE, PPO epochs) with metrics and checkpoints when `itstime`, and at the end:
the deployed pruner (per-layer capacities from the validation split) against the unpruned model and
random and cls_attention at exactly its per-layer token counts (matched GFLOPs), on `eval.split`.
Writes
`train_policy_results.{json,csv,md}`.
"""

import dataclasses
import time
from typing import Any

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
    )
  except UserError as e:
    raise UserError(f'--config.{key}: {e}') from e


def deployed_pruner(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  actor: Any,
  actor_params: Any,
  spec: policies.PolicySpec,
  mesh: jax.sharding.Mesh,
) -> pruning.Pruner:
  """The policy as a compact-mode pruner, its capacities measured on the validation split."""
  vit_cfg = model.config
  probe = policies.probe_pruner(spec, vit_cfg, actor, actor_params)
  kept = None
  if probe is not None:  # Capacities from what the policy keeps on validation images.
    kept = evaluate.evaluate_params(
      model,
      params,
      common.split_batches(config, 'validation')(),
      mesh=mesh,
      pruner=probe,
      execution='mask',
      rng=jax.random.PRNGKey(config.seed),
    ).kept_counts
  return policies.deployed_pruner(
    spec,
    vit_cfg,
    actor,
    actor_params,
    kept,
    quantile=config.deploy.capacity_quantile,
    bucket=config.deploy.capacity_bucket,
  )


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
) -> list[dict[str, Any]]:
  """The policy against the unpruned model and random / cls_attention at its exact capacities."""
  matched = [
    pruning.Pruner(f'{n}@matched', score, learned.budget)
    for n, score in (
      ('random', pruning.pruners.random_score),
      ('cls_attention', pruning.pruners.cls_attention_score),
    )
  ]
  # Both deployments at the same capacities: the policy's own per-image decisions (threshold 0,
  # part of each capacity left masked, which compact mode computes anyway) and its scores filling
  # the capacity (same GFLOPs, more tokens). For two_agent the first are its own votes.
  own = dataclasses.replace(learned, name=learned.name, threshold=0.0)
  filled = dataclasses.replace(learned, name=f'{learned.name}+fill', threshold=None)
  named = [('none', None), *[(p.name, p) for p in matched], (own.name, own), (filled.name, filled)]
  records = common.compare_on_split(
    config, model, params, named, split, mesh, throughput_repeats=config.eval.throughput_repeats
  )
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
  steps_per_epoch = info.split_sizes['train'] // p.num_envs
  if steps_per_epoch == 0:
    raise UserError(
      f'ppo.num_envs={p.num_envs} exceeds the {info.split_sizes["train"]} training images.'
    )

  init_key, loop_key = jax.random.split(jax.random.PRNGKey(config.seed))
  state = policies.init_learner_state(init_key, env, actor, critic, ppo, vit_cfg, mesh)
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
    inputs = parallel.shard_batch({'image': batch['image'], 'label': batch['label']}, mesh)
    state, metrics = update(state, inputs, jax.random.fold_in(loop_key, u - 1))
    if loop.itstime(u, p.log_every_steps, p.num_updates):
      values = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(values['total_loss']):
        raise UserError(
          f'The policy loss became {values["total_loss"]} at update {u}; the last good '
          f'checkpoint in {workdir} is kept. Lower --config.ppo.actor_lr.'
        )
      writer.write_scalars(u, values)
      logging.info(
        'Update %d/%d: return %.3f, kept %.3f; %s',
        u,
        p.num_updates,
        values['episode_return'],
        values.get('kept_fraction', float('nan')),
        eta(u),
      )
    if loop.itstime(u, p.checkpoint_every_steps, p.num_updates):
      ckpt.save(u, *policies.to_checkpoint(state), spec.to_meta())
  ckpt.wait()
  ckpt.close()
  train_time = time.perf_counter() - t0

  learned = deployed_pruner(config, model, params, actor, state.actor_params, spec, mesh)
  records = policy_records(config, model, params, learned, mesh, config.eval.split)
  table = compare.markdown_table(
    records,
    f'{spec.kind} policy vs matched-count heuristics, {config.data.name} {config.eval.split} split',
  )
  summary = {
    'policy': spec.kind,
    'split': config.eval.split,
    'updates': p.num_updates,
    'train_time_s': round(train_time, 1),
    'vit_checkpoint': vit_meta['checkpoint_dir'],
  }
  common.write_records(workdir, 'train_policy_results', records, summary, table)
  common.print_table(table)
  writer.close()
  return dict(summary, records=records)
