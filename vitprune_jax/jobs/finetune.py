"""`mode=finetune`: fine-tune the ViT with a learned policy pruning in the loop (RL4EViT), then
compare.

The policy (the first of `init.policy_dirs`) is frozen; the ViT (`init.vit_dir`) learns to classify
from what the policy leaves. `finetune.train_on` picks what the ViT sees while it trains:
- 'policy' (RL4EViT): the policy's own per-image decisions, in mask mode;
- 'deployed': exactly what inference runs, i.e. the compact-mode pruner with the per-layer
capacities
  bucketed on validation and filled by the policy's scores.
Everything else is `mode=train` (optimizer, checkpoints, resume, results). At the end the fine-tuned
ViT is compared, on `eval.split`, with the policy against random and cls_attention at the same
capacities, and with the original ViT unpruned: `finetune_comparison.{json,csv,md}`.
"""

import dataclasses
from typing import Any

import jax
import ml_collections

from vitprune_jax import parallel
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare, evaluate
from vitprune_jax.jobs import common, train, train_policy
from vitprune_jax.rl import policies


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  if not config.init.vit_dir or not config.init.policy_dirs:
    raise UserError(
      'finetune needs --config.init.vit_dir (the ViT run) and --config.init.policy_dirs '
      '(the train_policy run).'
    )
  mesh = parallel.make_mesh()
  common.check_batch(config, 'eval.batch_size')
  model, params, _ = common.load_vit(config, config.init.vit_dir, mesh)
  vit_cfg = model.config
  actor, actor_params, spec = policies.load_policy(config.init.policy_dirs[0], model, params, mesh)
  deployed = None
  if config.finetune.train_on == 'deployed':
    deployed = train_policy.deployed_pruner(config, model, params, actor, actor_params, spec, mesh)
    pruner, execution = dataclasses.replace(deployed, threshold=None), 'compact'
  else:
    uncapped = policies.uncapped(vit_cfg)
    pruner = policies.policy_pruner(spec, vit_cfg, actor, actor_params, uncapped)
    execution = 'mask'
  split = config.eval.split
  rng = jax.random.PRNGKey(config.seed)
  # Before training, which donates `params`.
  original = evaluate.evaluate_params(
    model, params, common.split_batches(config, split)(), mesh=mesh, rng=rng
  )
  state, metrics = train.train_and_evaluate(
    config, workdir, init=(model, params), pruner=pruner, prune_execution=execution
  )
  if 'halted_at_step' in metrics:
    return metrics
  # The comparison scores the checkpoint chosen on validation: the final params, unless an earlier
  # epoch was better, which is then read back from `best/`.
  if metrics['best_step'] == int(state.step):
    tuned, tuned_step = state.params, metrics['best_step']
  else:
    _, tuned, tuned_meta = common.load_vit(config, workdir, mesh)
    tuned_step = tuned_meta['checkpoint_step']
  if deployed is not None:  # Keep the capacities the ViT was trained with.
    learned = deployed
  else:  # The policy reads the ViT's tokens, so its capacities move with the ViT.
    learned = train_policy.deployed_pruner(config, model, tuned, actor, actor_params, spec, mesh)
  records = train_policy.policy_records(config, model, tuned, learned, mesh, split)
  summary = {
    'policy': spec.kind,
    'train_on': config.finetune.train_on,
    'split': split,
    'finetuned_checkpoint_step': tuned_step,
    f'original_unpruned_{split}_accuracy': original.accuracy,
    f'original_unpruned_{split}_macro_f1': original.macro_f1,
  }
  table = compare.markdown_table(
    records,
    f'{spec.kind} policy on the fine-tuned ViT vs matched-count heuristics, '
    f'{config.data.name} {split} split; the original ViT unpruned: '
    f'{100 * original.accuracy:.2f} %',
  )
  common.write_records(workdir, 'finetune_comparison', records, summary, table)
  common.print_table(table)
  return dict(metrics, comparison=dict(summary, records=records))
