"""`mode=train`: supervised ViT training in one flat step loop, then the test figures.

Set-up (model, optimizer, restore-or-init), then `for step, batch in zip(range(start, total),
batches)`: one jitted step (pruned from `train.prune_from_epoch` on when `train.pruner` is set),
metrics when
`itstime(step, log_every_steps)`, and one save site: every `checkpoint_every_steps`, at each epoch's
end (after a validation pass, offered to `best/`), and at a requested halt. Resuming is exact: the
batches are a pure function of (seed, epoch, step) and a rerun of the same command continues where
it stopped. Writes `train_results.json` with the best checkpoint's (and the final params') test
figures.
"""

import dataclasses
import functools
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from vitprune_jax import checkpoints, parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import evaluate
from vitprune_jax.jobs import common
from vitprune_jax.jobs import config as config_lib
from vitprune_jax.models import vit
from vitprune_jax.training import loop
from vitprune_jax.training import train as train_lib


def _meta(config, vit_cfg, info, epoch, step, **extra) -> dict[str, Any]:
  return dict(
    model=dataclasses.asdict(vit_cfg),
    dataset=info.name,
    image_shape=list(info.image_shape),
    epoch=epoch,
    step=step,
    seed=config.seed,
    **extra,
  )


def _opt_items(state: train_lib.TrainState) -> dict[str, Any]:
  return {'opt_state': state.opt_state, 'step': state.step, 'rng': state.rng}


def _start_from(config, mesh) -> Optional[tuple[vit.VisionTransformer, Any]]:
  """(model, params) of `init.vit_dir`: geometry from that checkpoint, dropout and dtype from
  config."""
  if not config.init.vit_dir:
    return None
  reused, params, meta = common.load_vit(config, config.init.vit_dir, mesh)
  vit_cfg = dataclasses.replace(
    reused.config,
    dropout_rate=config.model.dropout_rate,
    drop_path_rate=config.model.drop_path_rate,
    dtype=config.model.dtype,
  )
  logging.info(
    'Starting from the params in %s (step %d).', meta['checkpoint_dir'], meta['checkpoint_step']
  )
  return vit.create_model(vit_cfg), params


def batch_augment(config: ml_collections.ConfigDict) -> train_lib.BatchAugment:
  d = config.data
  return train_lib.BatchAugment(
    mixup_alpha=float(d.mixup_alpha),
    cutmix_alpha=float(d.cutmix_alpha),
    switch_prob=float(d.mixup_switch_prob),
    mix_prob=float(d.mixup_prob),
    erasing_prob=float(d.random_erasing),
  )


def distillation(
  config: ml_collections.ConfigDict, mesh, pruner: Optional[pruning.Pruner], execution: str
) -> tuple[Optional[train_lib.Distillation], Any, str]:
  """(Distillation, teacher params, the pruner's training execution) of `distill.*`; without a
  teacher (None, None, execution). Token distillation needs the student's tokens at the teacher's
  positions, so it trains a scoring pruner in mask mode; merging cannot give them."""
  d = config.distill
  if not d.teacher_dir:
    return None, None, execution
  if d.token_weight > 0.0 and pruner is not None:
    if pruner.merge_kind is not None:  # ToMe, EViT, drop-merge.
      raise UserError(
        f'--config.distill.token_weight={d.token_weight}: token distillation compares tokens at '
        f'the same positions, which {pruner.name} merges away; set it to 0 (logits only).'
      )
    execution = 'mask'
  teacher, params, meta = common.load_vit(config, d.teacher_dir, mesh)
  logging.info('Distilling from %s (step %d).', meta['checkpoint_dir'], meta['checkpoint_step'])
  spec = train_lib.Distillation(
    teacher=teacher,
    logit_weight=float(d.logit_weight),
    token_weight=float(d.token_weight),
    temperature=float(d.temperature),
  )
  return spec, params, execution


def train_pruner(config: ml_collections.ConfigDict, vit_cfg: vit.ViTConfig):
  return common.heuristic(config, config.train.pruner, vit_cfg)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  init: Optional[tuple[vit.VisionTransformer, Any]] = None,
  pruner: Optional[pruning.Pruner] = None,
  prune_execution: str = 'compact',
) -> tuple[train_lib.TrainState, dict[str, Any]]:
  """Trains (resuming from `workdir` if it holds a checkpoint) and returns (state, metrics).

  Args:
    config: the job's config.
    workdir: checkpoints, TensorBoard logs and train_results.json go here.
    init: (model, params) to start from (fine-tuning); default: `init.vit_dir`, else from scratch.
    pruner: replaces `train.pruner` (e.g. a learned policy), applied from `train.prune_from_epoch`.
    prune_execution: how `pruner` runs in training: compact | mask.

  Returns:
    The final train state and the metrics (test figures of the best checkpoint, or where it halted).
  """
  mesh = parallel.make_mesh()
  spec = common.data_spec(config)
  info = input_pipeline.get_info(spec)
  if init is None:
    init = _start_from(config, mesh)
  model = init[0] if init is not None else vit.create_model(common.vit_config(config))
  vit_cfg = model.config
  common.check_batch(config, 'train.batch_size')
  common.check_batch(config, 'eval.batch_size')
  t = config.train
  steps_per_epoch = info.split_sizes['train'] // t.batch_size
  if steps_per_epoch == 0:
    raise UserError(
      f'train.batch_size={t.batch_size} exceeds the {info.split_sizes["train"]} training '
      'examples; lower it.'
    )
  total_steps = steps_per_epoch * t.num_epochs
  lr_fn = train_lib.create_learning_rate_fn(
    t.learning_rate,
    steps_per_epoch,
    t.num_epochs,
    t.warmup_epochs,
    initial_lr=t.initial_learning_rate,
    final_lr=t.final_learning_rate,
  )
  optimizer = train_lib.create_optimizer(
    lr_fn, weight_decay=t.weight_decay, grad_clip_norm=t.grad_clip_norm
  )
  replicated = parallel.replicated_sharding(mesh)
  init_fn = functools.partial(
    train_lib.create_train_state, model=model, optimizer=optimizer, image_shape=info.image_shape
  )
  state = jax.jit(init_fn, out_shardings=replicated)(jax.random.PRNGKey(config.seed))
  if init is not None:
    # Jitted so every leaf (the step counts too) is a global, replicated array.
    opt_state = jax.jit(optimizer.init, out_shardings=replicated)(init[1])
    state = state.replace(params=init[1], opt_state=opt_state)
  ckpt = checkpoints.Checkpointer(workdir)
  if ckpt.latest_step() is not None:
    params, opt, meta = ckpt.restore_latest(state.params, _opt_items(state))
    state = state.replace(
      params=params, opt_state=opt['opt_state'], step=opt['step'], rng=opt['rng']
    )
    logging.info('Resumed from %s at step %d (epoch %d).', workdir, int(state.step), meta['epoch'])
  start = int(state.step)

  writer = common.metric_writer(workdir)
  if start == 0:
    writer.write_hparams(config_lib.flat(config))
  pruner = pruner if pruner is not None else train_pruner(config, vit_cfg)
  distill, teacher_params, prune_execution = distillation(config, mesh, pruner, prune_execution)
  step_fn = functools.partial(
    train_lib.train_step,
    num_classes=info.num_classes,
    label_smoothing=t.label_smoothing,
    learning_rate_fn=lr_fn,
    batch_augment=batch_augment(config),
    distillation=distill,
  )
  plain_step = jax.jit(step_fn, donate_argnums=(0,))
  pruned_step = None
  if pruner is not None:
    pruned_step = jax.jit(
      functools.partial(step_fn, pruner=pruner, prune_execution=prune_execution),
      donate_argnums=(0,),
    )
  halt_at = start + t.halt_after_steps if t.halt_after_steps > 0 else None
  stop = min(total_steps, halt_at) if halt_at else total_steps
  val_batches = common.split_batches(config, 'validation')
  batches = input_pipeline.train_batches(
    spec, global_batch_size=t.batch_size, start_step=start, steps_per_epoch=steps_per_epoch
  )
  eta = loop.Eta(start, stop)
  t0 = time.perf_counter()
  window, step = None, start
  for step, batch in zip(range(start + 1, stop + 1), batches):
    epoch = (step - 1) // steps_per_epoch  # 0-based epoch this step belongs to.
    pruning_now = pruner is not None and epoch >= t.prune_from_epoch
    state, step_metrics = (pruned_step if pruning_now else plain_step)(
      state, parallel.shard_batch(batch, mesh), teacher_params
    )
    window = step_metrics if window is None else window.merge(step_metrics)
    epoch_end = step % steps_per_epoch == 0
    save_now = epoch_end or loop.itstime(step, t.checkpoint_every_steps, stop, halt_step=halt_at)
    if loop.itstime(step, t.log_every_steps, stop) or save_now:  # Never save an unchecked loss.
      values = {f'train_{k}': float(v) for k, v in window.compute().items()}
      if not np.isfinite(values['train_loss']):
        raise UserError(
          f'Training loss became {values["train_loss"]} at step {step}; the last good checkpoint '
          f'in {workdir} is kept. Lower --config.train.learning_rate or use model.dtype=float32.'
        )
      writer.write_scalars(step, values)
      window = None
    if save_now:
      extra = {}
      if epoch_end:  # Validation as the model will be used: pruned once pruning has started.
        val = evaluate.evaluate_params(
          model,
          state.params,
          val_batches(),
          mesh=mesh,
          pruner=pruner if pruning_now else None,
          rng=jax.random.PRNGKey(config.seed),
        )
        extra = {'val_accuracy': val.accuracy}
        writer.write_scalars(
          step,
          {
            'val_accuracy': val.accuracy,
            'val_loss': val.loss,
            'epoch': epoch + 1,
            'pruning': float(pruning_now),
          },
        )
        logging.info(
          'Epoch %d/%d: train loss %.4f, val accuracy %.4f; %s',
          epoch + 1,
          t.num_epochs,
          values['train_loss'],
          val.accuracy,
          eta(step),
        )
      done_epochs = epoch + 1 if epoch_end else epoch
      meta = _meta(config, vit_cfg, info, done_epochs, step, **extra)
      ckpt.save(step, state.params, _opt_items(state), meta, best=epoch_end)
  ckpt.wait()
  train_time = time.perf_counter() - t0

  if step < total_steps:  # Halted on purpose: a rerun of the same command resumes.
    logging.info('Halted at step %d of %d; rerun the same command to resume.', step, total_steps)
    ckpt.close()
    writer.close()
    return state, {'halted_at_step': step, 'total_steps': total_steps}

  metrics = _final_metrics(config, model, info, state, ckpt, mesh, pruner)
  metrics.update(
    train_time_s=round(train_time, 2),
    steps=total_steps,
    epochs=t.num_epochs,
    resumed_from_step=start,
  )
  common.write_json(workdir, 'train_results.json', metrics)
  writer.write_scalars(total_steps, {'test_accuracy': metrics['test_accuracy']})
  writer.flush()
  ckpt.close()
  writer.close()
  return state, metrics


def _final_metrics(config, model, info, state, ckpt, mesh, pruner) -> dict[str, Any]:
  """Test figures of the checkpoint with the best validation accuracy (and of the final params)."""
  split = config.eval.split
  batches = common.split_batches(config, split)
  rng = jax.random.PRNGKey(config.seed)
  best_step = ckpt.best.best_step()
  best_params = checkpoints.load_params(str(ckpt.best.directory), best_step, state.params)
  best = evaluate.evaluate_params(model, best_params, batches(), mesh=mesh, rng=rng)
  final = evaluate.evaluate_params(model, state.params, batches(), mesh=mesh, rng=rng)
  best_meta = ckpt.best.metrics(best_step) or {}
  metrics = {
    'test_accuracy': best.accuracy,
    'test_macro_f1': best.macro_f1,
    'split': split,
    'checkpoint': 'best',
    'best_step': int(best_step),
    'best_val_accuracy': float(best_meta.get(checkpoints.BEST_METRIC, float('nan'))),
    'final_test_accuracy': final.accuracy,
    'dataset': info.name,
    'num_examples': best.num_examples,
  }
  if pruner is not None:
    pruned = evaluate.evaluate_params(
      model, best_params, batches(), mesh=mesh, pruner=pruner, rng=rng
    )
    metrics.update(
      train_pruner=pruner.name,
      test_accuracy_pruned=pruned.accuracy,
      tokens_per_layer_pruned=pruned.tokens_per_layer,
    )
  return metrics


def results_table(metrics: dict[str, Any]) -> str:
  """The final lines of `mode=train`: the best checkpoint's figures (or where it halted)."""
  if 'halted_at_step' in metrics:
    return (
      f'Halted at step {metrics["halted_at_step"]} of {metrics["total_steps"]}; rerun to resume.'
    )
  rows = [
    '| split | checkpoint | step | accuracy (%) | macro-F1 | final params (%) | train time (s) |',
    '|---|---|---|---|---|---|---|',
    f'| {metrics["split"]} ({metrics["num_examples"]} images) | best on validation | '
    f'{metrics["best_step"]} | {100 * metrics["test_accuracy"]:.2f} | '
    f'{metrics["test_macro_f1"]:.4f} | {100 * metrics["final_test_accuracy"]:.2f} | '
    f'{metrics["train_time_s"]:.0f} |',
  ]
  if 'test_accuracy_pruned' in metrics:
    rows.append(
      f'\nWith {metrics["train_pruner"]} pruning: {100 * metrics["test_accuracy_pruned"]:.2f} %.'
    )
  return '\n'.join(rows)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  _, metrics = train_and_evaluate(config, workdir)
  common.print_table(results_table(metrics))
  return metrics
