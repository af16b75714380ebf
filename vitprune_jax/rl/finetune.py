"""`mode='finetune'`: fine-tune the ViT with a learned policy pruning in the loop, as RL4EViT does, then compare.

The policy (from `config.rl.policy_dir`) is frozen; the ViT (from `config.eval.checkpoint_dir`) learns to classify
from what the policy leaves. `rl.finetune_pruner` picks what the ViT sees while it trains:
- 'policy' (RL4EViT): the policy's own per-image decisions, in mask mode;
- 'deployed': exactly what inference runs, i.e. the compact-mode pruner with the per-layer capacities bucketed on
  validation and filled by the policy's scores, so training and deployment see the same tokens.
Everything else is `mode='train'` (optimizer, checkpoints, resume, results). At the end the fine-tuned ViT is
compared, on `eval.split`, with the policy against random and cls_attention at the same per-layer capacities, and
with the original ViT unpruned: `finetune_comparison.{json,csv,md}`.
"""
import dataclasses
from typing import Any

import jax
import ml_collections

from vitprune_jax import parallel
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare
from vitprune_jax.evaluation import evaluate as evaluation
from vitprune_jax.rl import policy_pruner, train_policy
from vitprune_jax.training import train

FINETUNE_PRUNERS = ('policy', 'deployed')


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if not config.eval.checkpoint_dir or not config.rl.policy_dir:
    raise UserError('finetune needs --config.eval.checkpoint_dir (the ViT run) and --config.rl.policy_dir '
                    '(the train_policy run).')
  if config.rl.finetune_pruner not in FINETUNE_PRUNERS:
    raise UserError(f'Unknown --config.rl.finetune_pruner={config.rl.finetune_pruner!r}; choose one of: '
                    f'{", ".join(FINETUNE_PRUNERS)}.')
  mesh = parallel.make_mesh()
  model, params, _ = evaluation.load_model_for_reuse(config, config.eval.checkpoint_dir, mesh)
  policy_dir = config.rl.policy_dir.split(',')[0].strip()
  actor, actor_params, meta = train_policy.load_policy(policy_dir, config, model.config, params, mesh)
  if config.rl.finetune_pruner == 'deployed':
    deployed = train_policy.learned_pruner(config, model, params, actor, actor_params, meta, mesh)
    pruner, mode = dataclasses.replace(deployed, threshold=None), 'compact'
  else:
    pruner, mode = policy_pruner.make_policy_pruner(meta['kind'], meta['kind'], model.config, actor, actor_params,
                                                    meta, policy_pruner.uncapped(model.config)), 'mask'
  split = config.eval.split
  original = evaluation.evaluate_params(config, model, params, split, mesh)  # Training donates `params`.
  results = train.train_and_evaluate(config, workdir, init=(model, params), pruner=pruner, prune_mode=mode)

  _, tuned, tuned_meta = evaluation.load_model_for_reuse(config, workdir, mesh)
  if config.rl.finetune_pruner == 'deployed':  # Keep the capacities the ViT was trained with.
    learned = deployed
  else:  # The policy reads the ViT's tokens, so what it keeps (hence the capacities) moves with the ViT.
    learned = train_policy.learned_pruner(config, model, tuned, actor, actor_params, meta, mesh)
  records = train_policy.policy_records(config, model, tuned, learned, mesh, split)
  summary = {'policy': meta['kind'], 'finetune_pruner': config.rl.finetune_pruner, 'split': split,
             'finetuned_checkpoint_step': tuned_meta['checkpoint_step'],
             f'original_unpruned_{split}_accuracy': original['accuracy'],
             f'original_unpruned_{split}_macro_f1': original['macro_f1']}
  table = compare.markdown_table(records, f'{meta["kind"]} policy on the fine-tuned ViT vs matched-count '
                                          f'heuristics, {config.dataset.name} {split} split; the original ViT '
                                          f'unpruned: {100 * original["accuracy"]:.2f} %')
  compare.write_records(workdir, 'finetune_comparison', records, summary, table)
  if jax.process_index() == 0:
    print(table)
  return dict(results, comparison=dict(summary, records=records))
