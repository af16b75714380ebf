"""`mode='train_policy'`: learn a pruning policy for a frozen, reused ViT checkpoint, then compare it.

Set-up (ViT from `eval.checkpoint_dir`, env, networks), restore-or-init the policy from `<workdir>/policy`, a loop of
jitted MAPPO updates (each: rollout over a batch of training images, GAE, PPO epochs), periodic orbax checkpoints,
and at the end: per-layer capacities from the validation split, then the comparison on `eval.split` against the
unpruned model and against random and cls_attention pruning at exactly the same per-layer token counts (matched
GFLOPs). Writes `train_policy_results.{json,csv,md}`.
"""
import dataclasses
import math
import os
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from vitprune_jax import checkpoints, parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare
from vitprune_jax.evaluation import evaluate as evaluation
from vitprune_jax.models import vit
from vitprune_jax.rl import learner, networks, policy_pruner, pruning_env, two_agent_env

POLICY_DIR = 'policy'
POLICIES = ('mappo', 'two_agent')


def make_policy_env(config: ml_collections.ConfigDict, cfg: vit.ViTConfig, params: Any
                    ) -> tuple[learner.EnvFns, dict[str, Any]]:
  """The env of `config.rl.policy` and the static facts a pruner needs to replay the policy later."""
  rl = config.rl
  if rl.policy == 'mappo':
    points = tuple(rl.pruning_points) or pruning_env.default_points(cfg.num_layers)
    try:
      env = pruning_env.make_env(cfg, params, alpha=rl.alpha, beta=rl.beta, points=points,
                                 accuracy_clip=rl.accuracy_clip)
    except ValueError as e:
      raise UserError(f'--config.rl.pruning_points: {e}') from e
    return env, {'kind': 'mappo', 'points': list(points)}
  if rl.policy == 'two_agent':
    try:
      env = two_agent_env.make_env(cfg, params, point=rl.two_agent_point, alpha=rl.alpha,
                                   target_prune_ratio=rl.target_prune_ratio, ratio_penalty=rl.ratio_penalty,
                                   accuracy_clip=rl.accuracy_clip)
    except ValueError as e:
      raise UserError(f'--config.rl.two_agent_point: {e}') from e
    return env, {'kind': 'two_agent', 'point': rl.two_agent_point, 'target_prune_ratio': rl.target_prune_ratio}
  raise UserError(f'Unknown --config.rl.policy={rl.policy!r}; choose one of: {", ".join(POLICIES)}.')


def _batches(config: ml_collections.ConfigDict, start_update: int, steps_per_epoch: int
             ) -> Iterator[dict[str, np.ndarray]]:
  """Training images, epoch after epoch, starting where update `start_update` left off (exact resume)."""
  epoch, skip = divmod(start_update, steps_per_epoch)
  while True:
    ds = input_pipeline.make_dataset(config, 'train', global_batch_size=config.rl.num_envs, train=True,
                                     epoch=epoch, skip_batches=skip)
    for batch in input_pipeline.as_numpy(ds):
      yield {'image': batch['image'], 'label': batch['label']}
    epoch, skip = epoch + 1, 0


def load_policy(path: str, config: ml_collections.ConfigDict, cfg: vit.ViTConfig, params: Any,
                mesh: jax.sharding.Mesh) -> tuple[networks.Actor, Any, dict[str, Any]]:
  """Restores the best policy saved by a train_policy run (its actor params and meta)."""
  ckpt_dir, step, meta = checkpoints.read_meta(os.path.join(path, POLICY_DIR))
  policy_config = config.copy_and_resolve_references()
  policy_config.unlock()
  policy_config.rl.policy = meta['kind']
  env, _ = make_policy_env(policy_config, cfg, params)
  actor, critic = networks.Actor(meta['hidden_size']), networks.Critic(meta['hidden_size'])
  abstract = _abstract_learner(policy_config, env, actor, critic, mesh)
  restored = checkpoints.load_params(ckpt_dir, step, {'actor': abstract.actor_params,
                                                      'critic': abstract.critic_params})
  return actor, restored['actor'], meta


def _abstract_learner(config, env, actor, critic, mesh) -> learner.LearnerState:
  info = input_pipeline.get_info(config)
  sample = {'image': jnp.zeros((1,) + tuple(info.image_shape)), 'label': jnp.zeros((1,), jnp.int32)}
  _, obs = jax.eval_shape(lambda s: env.reset(jax.random.PRNGKey(0), s), sample)
  state = jax.eval_shape(lambda o: learner.init_learner(jax.random.PRNGKey(0), config, actor, critic, o), obs)
  replicated = parallel.replicated_sharding(mesh)
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)


def learned_pruner(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any,
                   actor: networks.Actor, actor_params: Any, meta: dict[str, Any], mesh: jax.sharding.Mesh
                   ) -> pruning.Pruner:
  """The policy as a compact-mode pruner.

  MAPPO's capacities are bucketed from what it keeps on the validation split. The two-agent policy is trained to
  meet a target prune ratio (seed 000), so its capacity after the vote is that target, filled by its scores.
  """
  cfg = model.config
  if meta['kind'] == 'two_agent':
    kept = 1 + math.ceil((1.0 - meta['target_prune_ratio']) * cfg.num_patches)
    capacities = [cfg.num_tokens] * meta['point'] + [kept] * (cfg.num_layers - meta['point'])
    pruner = policy_pruner.make_policy_pruner(meta['kind'], meta['kind'], cfg, actor, actor_params, meta,
                                              capacities)
    return dataclasses.replace(pruner, threshold=None)
  probe = policy_pruner.make_policy_pruner(meta['kind'], meta['kind'], cfg, actor, actor_params, meta,
                                           policy_pruner.uncapped(cfg))
  kept = evaluation.evaluate_params(config, model, params, 'validation', mesh, probe, 'mask')
  if not 0.0 < config.rl.capacity_quantile <= 1.0:
    raise UserError(f'rl.capacity_quantile={config.rl.capacity_quantile} must be in (0, 1].')
  capacities = policy_pruner.bucket_capacities(kept['kept_counts'], cfg.num_tokens, config.rl.capacity_quantile,
                                               config.rl.capacity_bucket)
  return policy_pruner.make_policy_pruner(meta['kind'], meta['kind'], cfg, actor, actor_params, meta, capacities)


def policy_records(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any,
                   learned: pruning.Pruner, mesh: jax.sharding.Mesh, split: str) -> list[dict[str, Any]]:
  """The policy against the unpruned model and random / cls_attention at its exact per-layer capacities."""
  matched = [pruning.Pruner(f'{n}@matched', score, learned.budget) for n, score in
             (('random', pruning.pruners.random_score), ('cls_attention', pruning.pruners.cls_attention_score))]
  # The policy's own per-image decisions leave part of each capacity masked; compact mode computes it anyway, so
  # also report the policy's logits filling the capacity (same GFLOPs, more tokens).
  named = [('none', None), *[(p.name, p) for p in matched], (learned.name, learned)]
  if learned.threshold is not None:
    filled = dataclasses.replace(learned, name=f'{learned.name}+fill', threshold=None)
    named.append((filled.name, filled))
  records = compare.compare_pruner_objects(config, model, params, named, split, mesh)
  for r in records:
    r['capacities'] = list(learned.budget)
  return records


def train_policy(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  mesh = parallel.make_mesh()
  parallel.check_global_batch(config.rl.num_envs, 'rl.num_envs')
  parallel.check_global_batch(config.eval.batch_size, 'eval.batch_size')
  if not config.eval.checkpoint_dir:
    raise UserError('train_policy needs a trained ViT: set --config.eval.checkpoint_dir to a train run directory.')
  model, params, vit_meta = evaluation.load_model_for_reuse(config, config.eval.checkpoint_dir, mesh)
  cfg = model.config
  env, policy_meta = make_policy_env(config, cfg, params)
  actor, critic = networks.Actor(config.rl.hidden_size), networks.Critic(config.rl.hidden_size)
  info = input_pipeline.get_info(config)
  steps_per_epoch = info.split_sizes['train'] // config.rl.num_envs
  if steps_per_epoch == 0:
    raise UserError(f'rl.num_envs={config.rl.num_envs} exceeds the {info.split_sizes["train"]} training images.')

  key = jax.random.PRNGKey(config.seed)
  init_key, loop_key = jax.random.split(key)
  state = jax.jit(lambda k: learner.init_learner(k, config, actor, critic, _sample_obs(env, info)),
                  out_shardings=parallel.replicated_sharding(mesh))(init_key)
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, POLICY_DIR))
  meta = dict(policy_meta, hidden_size=config.rl.hidden_size, vit_checkpoint=vit_meta['checkpoint_dir'],
              alpha=config.rl.alpha, beta=config.rl.beta)
  if ckpt.latest_step() is not None:
    nets, opt, saved_meta = ckpt.restore_latest({'actor': state.actor_params, 'critic': state.critic_params},
                                                _opt(state))
    if {k: saved_meta.get(k) for k in policy_meta} != policy_meta:
      raise checkpoints.CheckpointError(f'The policy checkpoint in {workdir} is a {saved_meta.get("kind")} policy '
                                        f'with other pruning points; use another --workdir.')
    state = state._replace(actor_params=nets['actor'], critic_params=nets['critic'],
                           actor_opt_state=opt['actor_opt_state'], critic_opt_state=opt['critic_opt_state'],
                           step=opt['step'])
    logging.info('Resumed the policy at update %d.', int(state.step))
  start = int(state.step)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=config.rl.num_updates, writer=writer)
  update = jax.jit(learner.make_update(config, env, actor, critic), donate_argnums=(0,))
  batches = _batches(config, start, steps_per_epoch)
  t0 = time.time()
  for u in range(start, config.rl.num_updates):
    inputs = parallel.shard_batch(next(batches), mesh)
    state, metrics = update(state, inputs, jax.random.fold_in(loop_key, u))
    report(u + 1)
    if (u + 1) % config.rl.log_every == 0 or u + 1 == config.rl.num_updates:
      values = {k: float(v) for k, v in metrics.items()}
      if not np.isfinite(values['total_loss']):
        raise UserError(f'The policy loss became {values["total_loss"]} at update {u + 1}; the last good '
                        f'checkpoint in {workdir} is kept. Lower --config.rl.actor_lr.')
      writer.write_scalars(u + 1, values)
    if (u + 1) % config.rl.checkpoint_every == 0 or u + 1 == config.rl.num_updates:
      ckpt.save(u + 1, {'actor': state.actor_params, 'critic': state.critic_params}, _opt(state), meta)
  ckpt.wait()
  train_time = time.time() - t0
  ckpt.close()

  learned = learned_pruner(config, model, params, actor, state.actor_params, meta, mesh)
  records = policy_records(config, model, params, learned, mesh, config.eval.split)
  table = compare.markdown_table(records, f'{meta["kind"]} policy vs matched-count heuristics, '
                                          f'{config.dataset.name} {config.eval.split} split')
  summary = {'policy': meta['kind'], 'split': config.eval.split, 'updates': config.rl.num_updates,
             'train_time_s': round(train_time, 1), 'vit_checkpoint': vit_meta['checkpoint_dir']}
  compare.write_records(workdir, 'train_policy_results', records, summary, table)
  if jax.process_index() == 0:
    print(table)
  writer.close()
  return dict(summary, records=records)


def _sample_obs(env: learner.EnvFns, info: input_pipeline.DatasetInfo) -> learner.EnvObs:
  sample = {'image': jnp.zeros((1,) + tuple(info.image_shape)), 'label': jnp.zeros((1,), jnp.int32)}
  return env.reset(jax.random.PRNGKey(0), sample)[1]


def _opt(state: learner.LearnerState) -> dict[str, Any]:
  return {'actor_opt_state': state.actor_opt_state, 'critic_opt_state': state.critic_opt_state,
          'step': state.step}
