"""Supervised ViT training (`mode='train'`): set-up, restore-or-init, loop, per-epoch eval and checkpoints.

The step is a pure function `(state, batch) -> (state, metrics)` jitted once; the batch is split over all devices
and the params replicated (see `parallel.py`). Resuming is exact: the data order is a pure function of
(seed, epoch) and the step's dropout key is `fold_in(state.rng, step)`, so a killed and rerun job ends with the
same parameters as one that was never interrupted.
"""
import dataclasses
import functools
import json
import os
import time
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tensorflow as tf
from absl import logging
from clu import metric_writers, metrics, periodic_actions
from flax.training import train_state

from vitprune_jax import checkpoints, parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import evaluate as evaluation
from vitprune_jax.models import vit


class TrainState(train_state.TrainState):
  rng: jax.Array  # Base key for dropout; each step uses fold_in(rng, step), never the key itself.


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Average.from_output('accuracy')
  grad_norm: metrics.Average.from_output('grad_norm')
  learning_rate: metrics.LastValue.from_output('learning_rate')


def create_learning_rate_fn(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  total = config.train.num_epochs * steps_per_epoch
  warmup = int(config.train.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(0.0, config.train.learning_rate, max(warmup, 1), max(total, warmup + 1))


def create_optimizer(config: ml_collections.ConfigDict, learning_rate_fn: optax.Schedule
                     ) -> optax.GradientTransformation:
  """AdamW (no decay on biases, norms, embeddings' 1-D params) after global-norm clipping."""
  decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
  return optax.chain(
      optax.clip_by_global_norm(config.train.grad_clip_norm),
      optax.adamw(learning_rate_fn, weight_decay=config.train.weight_decay, mask=decay_mask))


def create_train_state(rng: jax.Array, model: vit.VisionTransformer, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, int, int]) -> TrainState:
  init_rng, dropout_rng = jax.random.split(rng)
  params = model.init(init_rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer, rng=dropout_rng)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Mean smoothed cross-entropy over the examples with mask 1 (padding rows count for nothing)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, num_classes: int, label_smoothing: float,
               learning_rate_fn: optax.Schedule, pruner: Optional[pruning.Pruner] = None,
               prune_mode: str = 'compact') -> tuple[TrainState, TrainMetrics]:
  """One AdamW step; with a pruner in compact mode the forward really runs on fewer tokens (cheaper steps)."""
  dropout_rng, prune_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
  selector = None if pruner is None else pruning.make_selector(pruner, mode=prune_mode, rng=prune_rng)

  def loss_fn(params):
    logits, _ = state.apply_fn({'params': params}, batch['image'], train=True, rngs={'dropout': dropout_rng},
                               token_selector=selector)
    loss = cross_entropy(logits, batch['label'], batch['mask'], num_classes, label_smoothing)
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']
  step_metrics = TrainMetrics.single_from_model_output(
      loss=loss, accuracy=jnp.sum(correct) / jnp.maximum(jnp.sum(batch['mask']), 1.0),
      grad_norm=optax.global_norm(grads), learning_rate=learning_rate_fn(state.step))
  return state.apply_gradients(grads=grads), step_metrics


def build_model(config: ml_collections.ConfigDict) -> tuple[vit.VisionTransformer, input_pipeline.DatasetInfo]:
  info = input_pipeline.get_info(config)
  vit_config = vit.vit_config_from(config, info.num_classes, info.image_shape[-1])
  return vit.create_model(vit_config), info


def init_from_checkpoint(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                         ) -> tuple[vit.VisionTransformer, Any]:
  """(model, params) of `config.train.init_from`: geometry from that checkpoint, dropout and dtype from `config`."""
  reused, params, meta = evaluation.load_model_for_reuse(config, config.train.init_from, mesh)
  vit_config = dataclasses.replace(reused.config, dropout_rate=config.model.dropout_rate, dtype=config.model.dtype)
  logging.info('Starting from the params in %s (step %d); model geometry from its metadata: %s.',
               meta['checkpoint_dir'], meta['checkpoint_step'], vit_config)
  return vit.create_model(vit_config), params


def _meta(config, model, info, epoch, step, **extra) -> dict[str, Any]:
  return dict(model=dataclasses.asdict(model.config), dataset=info.name, image_shape=list(info.image_shape),
              epoch=epoch, step=step, seed=config.seed, **extra)


def _check_finite(values: dict[str, float], step: int, workdir: str) -> None:
  if not np.isfinite(values['loss']):
    raise UserError(f'Training loss became {values["loss"]} at step {step}; the last good checkpoint in '
                    f'{workdir} is kept. Lower --config.train.learning_rate or set --config.model.dtype=float32.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       init: Optional[tuple[vit.VisionTransformer, Any]] = None,
                       pruner: Optional[pruning.Pruner] = None, prune_mode: str = 'compact') -> dict[str, Any]:
  """Trains (resuming from `workdir` if it holds a checkpoint), evaluates every epoch, writes train_results.json.

  `init` = (model, params) starts from another run's weights (fine-tuning; `config.train.init_from` does the same
  from the command line); `pruner` replaces `config.prune.train_pruner` (e.g. a learned policy), applied from
  `config.prune.prune_from_epoch` on.
  """
  model, info = build_model(config)
  mesh = parallel.make_mesh()
  if init is None and config.train.init_from:
    init = init_from_checkpoint(config, mesh)
  if init is not None:
    model = init[0]
  parallel.check_global_batch(config.train.batch_size, 'train.batch_size')
  parallel.check_global_batch(config.eval.batch_size, 'eval.batch_size')
  steps_per_epoch = info.split_sizes['train'] // config.train.batch_size
  if steps_per_epoch == 0:
    raise UserError(f'train.batch_size={config.train.batch_size} exceeds the {info.split_sizes["train"]} '
                    'training examples; lower it.')
  total_steps = steps_per_epoch * config.train.num_epochs
  learning_rate_fn = create_learning_rate_fn(config, steps_per_epoch)
  optimizer = create_optimizer(config, learning_rate_fn)

  init_fn = functools.partial(create_train_state, model=model, optimizer=optimizer, image_shape=info.image_shape)
  state = jax.jit(init_fn, out_shardings=parallel.replicated_sharding(mesh))(jax.random.PRNGKey(config.seed))
  if init is not None:
    # Jitted so every leaf (the step counts too) is a global, replicated array, as the step and orbax expect.
    opt_state = jax.jit(optimizer.init, out_shardings=parallel.replicated_sharding(mesh))(init[1])
    state = state.replace(params=init[1], opt_state=opt_state)
  ckpt = checkpoints.Checkpointer(workdir)
  if ckpt.latest_step() is not None:
    params, opt, meta = ckpt.restore_latest(state.params, _opt_items(state))
    state = state.replace(params=params, opt_state=opt['opt_state'], step=opt['step'], rng=opt['rng'])
    logging.info('Resumed from %s at step %d (epoch %d).', workdir, int(state.step), meta['epoch'])
  start_step = int(state.step)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()})
  report_progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
  step_fn = functools.partial(train_step, num_classes=info.num_classes,
                              label_smoothing=config.train.label_smoothing, learning_rate_fn=learning_rate_fn)
  p_train_step = jax.jit(step_fn, donate_argnums=(0,))
  pruner = pruner if pruner is not None else train_pruner(config, model)
  p_pruned_step = (jax.jit(functools.partial(step_fn, pruner=pruner, prune_mode=prune_mode), donate_argnums=(0,))
                   if pruner else None)
  halt_at = start_step + config.train.halt_after_steps if config.train.halt_after_steps > 0 else None

  step = start_step
  best_val = -1.0
  t0 = time.time()
  for epoch in range(start_step // steps_per_epoch, config.train.num_epochs):
    skip = step - epoch * steps_per_epoch
    ds = input_pipeline.make_dataset(config, 'train', global_batch_size=config.train.batch_size, train=True,
                                     epoch=epoch, skip_batches=skip)
    window = None
    pruning_now = pruner is not None and epoch >= config.prune.prune_from_epoch
    step_now = p_pruned_step if pruning_now else p_train_step
    epoch_start = time.time()
    for batch in input_pipeline.as_numpy(ds):
      state, step_metrics = step_now(state, parallel.shard_batch(batch, mesh))
      step += 1
      window = step_metrics if window is None else window.merge(step_metrics)
      report_progress(step)
      epoch_end = step == (epoch + 1) * steps_per_epoch
      will_save = step % config.train.checkpoint_every_steps == 0 or epoch_end or step == halt_at
      if step % config.train.log_every_steps == 0 or will_save:  # Never save without checking the loss.
        values = {f'train_{k}': float(v) for k, v in window.compute().items()}
        _check_finite({'loss': values['train_loss']}, step, workdir)
        writer.write_scalars(step, values)
        window = None
      if step == halt_at:
        break
      if step % config.train.checkpoint_every_steps == 0 and not epoch_end:
        ckpt.save(step, state.params, _opt_items(state), _meta(config, model, info, epoch, step))
    if step == halt_at and step != (epoch + 1) * steps_per_epoch:
      ckpt.save(step, state.params, _opt_items(state), _meta(config, model, info, epoch, step))
      break
    epoch_time = time.time() - epoch_start
    # Validation as the model will be used: pruned once pruning has started.
    val = evaluation.evaluate_params(config, model, state.params, 'validation', mesh,
                                     pruner if pruning_now else None)
    writer.write_scalars(step, {'val_accuracy': val['accuracy'], 'val_loss': val['loss'],
                                'epoch': epoch + 1, 'epoch_train_time_s': epoch_time,
                                'pruning': float(pruning_now)})
    best_val = max(best_val, val['accuracy'])
    ckpt.save(step, state.params, _opt_items(state),
              _meta(config, model, info, epoch + 1, step, val_accuracy=val['accuracy']), best=True)
    logging.info('Epoch %d/%d: val accuracy %.4f', epoch + 1, config.train.num_epochs, val['accuracy'])
    if step == halt_at:
      break
  ckpt.wait()
  train_time = time.time() - t0

  if step < total_steps:  # Halted on purpose: a rerun of the same command resumes.
    logging.info('Halted at step %d of %d; rerun the same command to resume.', step, total_steps)
    ckpt.close()
    writer.close()
    return {'halted_at_step': step, 'total_steps': total_steps}

  results = _final_results(config, model, info, state, ckpt, mesh, pruner)
  results.update(train_time_s=round(train_time, 2), steps=total_steps, epochs=config.train.num_epochs,
                 resumed_from_step=start_step)
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, 'train_results.json'), 'w') as f:  # Local or gs:// alike.
      json.dump(results, f, indent=2)
  logging.info('Results: %s', results)
  writer.write_scalars(total_steps, {'test_accuracy': results['test_accuracy']})
  writer.flush()
  ckpt.close()
  writer.close()
  return results


def _final_results(config, model, info, state, ckpt, mesh, pruner) -> dict[str, Any]:
  """Test figures of the checkpoint with the best validation accuracy (and of the final params)."""
  split = config.eval.split
  best_step = ckpt.best.best_step()
  best_params = checkpoints.load_params(str(ckpt.best.directory), best_step, state.params)
  best = evaluation.evaluate_params(config, model, best_params, split, mesh)
  final = evaluation.evaluate_params(config, model, state.params, split, mesh)
  best_meta = ckpt.best.metrics(best_step) or {}
  results = {'test_accuracy': best['accuracy'], 'test_macro_f1': best['macro_f1'], 'split': split,
             'checkpoint': 'best', 'best_step': int(best_step),
             'best_val_accuracy': float(best_meta.get(checkpoints.BEST_METRIC, float('nan'))),
             'final_test_accuracy': final['accuracy'], 'dataset': info.name,
             'num_examples': best['num_examples']}
  if pruner is not None:
    pruned = evaluation.evaluate_params(config, model, best_params, split, mesh, pruner)
    results.update(train_pruner=pruner.name, test_accuracy_pruned=pruned['accuracy'],
                   tokens_per_layer_pruned=pruned['tokens_per_layer'])
  return results


def train_pruner(config: ml_collections.ConfigDict, model: vit.VisionTransformer) -> Optional[pruning.Pruner]:
  if config.prune.train_pruner == 'none':
    return None
  return pruning.make_pruner(config.prune.train_pruner, model.config, r_max=config.prune.r_max,
                             alpha=config.prune.alpha)


def _opt_items(state: TrainState) -> dict[str, Any]:
  return {'opt_state': state.opt_state, 'step': state.step, 'rng': state.rng}


def _flat(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out
