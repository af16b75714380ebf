"""`mode='finetune'`: fine-tune the ViT with a learned policy pruning in the loop (mask mode), as RL4EViT does.

The policy (from `config.rl.policy_dir`) is frozen and decides per image which tokens each block sees; the ViT
(from `config.eval.checkpoint_dir`) learns to classify from what is left. Everything else is `mode='train'`:
same optimizer, checkpoints, resume and results, with pruning from `config.prune.prune_from_epoch` (set 0).
"""
from typing import Any

import ml_collections

from vitprune_jax import parallel
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import evaluate as evaluation
from vitprune_jax.rl import policy_pruner, train_policy
from vitprune_jax.training import train


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if not config.eval.checkpoint_dir or not config.rl.policy_dir:
    raise UserError('finetune needs --config.eval.checkpoint_dir (the ViT run) and --config.rl.policy_dir '
                    '(the train_policy run).')
  mesh = parallel.make_mesh()
  model, params, _ = evaluation.load_model_for_reuse(config, config.eval.checkpoint_dir, mesh)
  policy_dir = config.rl.policy_dir.split(',')[0].strip()
  actor, actor_params, meta = train_policy.load_policy(policy_dir, config, model.config, params, mesh)
  pruner = policy_pruner.make_policy_pruner(meta['kind'], meta['kind'], model.config, actor, actor_params, meta,
                                            policy_pruner.uncapped(model.config))
  return train.train_and_evaluate(config, workdir, init=(model, params), pruner=pruner, prune_mode='mask')
