"""Classification evaluation: the jitted eval function (optionally pruned), split-level metrics, model reuse.

`load_model_for_reuse` rebuilds the model from a checkpoint's own metadata, so any run's checkpoint can be
evaluated, pruned or given to a policy without repeating its model config.
"""
import functools
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from sklearn import metrics as skmetrics

from vitprune_jax import checkpoints, parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit


@functools.lru_cache(maxsize=64)
def eval_fn(model: vit.VisionTransformer, pruner: Optional[pruning.Pruner] = None, mode: str = 'compact'
            ) -> Callable[..., dict[str, jax.Array]]:
  """Jitted `(params, batch, rng) -> per-example outputs`, one compile per (model, pruner, mode)."""

  def fn(params, batch, rng):
    selector = None if pruner is None else pruning.make_selector(pruner, mode=mode, rng=rng)
    logits, aux = model.apply({'params': params}, batch['image'], train=False, token_selector=selector)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return {'pred': jnp.argmax(logits, -1), 'loss': loss, 'label': batch['label'], 'mask': batch['mask'],
            'kept': jnp.stack(aux.kept, axis=1)}

  return jax.jit(fn)


def classification_metrics(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
  return {
      'accuracy': float(np.mean(preds == labels)) if len(labels) else float('nan'),
      'macro_f1': float(skmetrics.f1_score(labels, preds, labels=np.arange(num_classes), average='macro',
                                           zero_division=0)),
  }


def evaluate_params(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any, split: str,
                    mesh: jax.sharding.Mesh, pruner: Optional[pruning.Pruner] = None, mode: str = 'compact',
                    rng: Optional[jax.Array] = None) -> dict[str, Any]:
  """Accuracy, macro-F1, mean loss and mean tokens kept per layer on every example of `split` (all hosts)."""
  ds = input_pipeline.make_dataset(config, split, global_batch_size=config.eval.batch_size, train=False)
  rng = jax.random.PRNGKey(config.seed) if rng is None else rng
  outs, fn, start, compile_time = [], None, None, 0.0
  for i, batch in enumerate(input_pipeline.as_numpy(ds)):
    batch = parallel.shard_batch(batch, mesh)
    key = jax.random.fold_in(rng, i)
    if fn is None:  # Compile ahead of time so the reported eval time is the steady state only.
      t0 = time.perf_counter()
      fn = eval_fn(model, pruner, mode).lower(params, batch, key).compile()
      start = time.perf_counter()
      compile_time = start - t0
    outs.append(multihost_utils.process_allgather(fn(params, batch, key), tiled=True))
  if not outs:
    raise UserError(f'The {split!r} split of {config.dataset.name} is empty; check --config.dataset.val_fraction '
                    'and test_fraction.')
  cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
  keep = cat['mask'] > 0
  result = classification_metrics(cat['pred'][keep], cat['label'][keep], model.config.num_classes)
  result.update(loss=float(np.mean(cat['loss'][keep])), num_examples=int(keep.sum()),
                eval_time_s=time.perf_counter() - start, compile_time_s=compile_time,
                tokens_per_layer=[float(v) for v in cat['kept'][keep].mean(axis=0)],
                kept_counts=cat['kept'][keep])
  return result


def load_model_for_reuse(config: ml_collections.ConfigDict, path: str, mesh: jax.sharding.Mesh
                         ) -> tuple[vit.VisionTransformer, Any, dict[str, Any]]:
  """Rebuilds the model a checkpoint was trained with and restores its params, replicated over `mesh`."""
  ckpt_dir, step, meta = checkpoints.read_meta(path)
  vit_config = vit.ViTConfig(**meta['model'])
  info = input_pipeline.get_info(config)
  if tuple(meta['image_shape']) != tuple(info.image_shape):
    raise UserError(f'The checkpoint in {ckpt_dir} was trained on images of shape {tuple(meta["image_shape"])} '
                    f'but {info.name} with this config gives {info.image_shape}; set '
                    f'--config.dataset.image_size={meta["image_shape"][0]} (or use the matching dataset).')
  if vit_config.num_classes != info.num_classes:
    raise UserError(f'The checkpoint in {ckpt_dir} has {vit_config.num_classes} classes but {info.name} has '
                    f'{info.num_classes}; evaluate it on the dataset it was trained on.')
  model = vit.create_model(vit_config)
  params_like = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1,) + tuple(info.image_shape)))['params'])
  replicated = parallel.replicated_sharding(mesh)
  params_like = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                                       params_like)
  params = checkpoints.load_params(ckpt_dir, step, params_like)
  return model, params, dict(meta, checkpoint_dir=ckpt_dir, checkpoint_step=step)
