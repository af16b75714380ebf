"""Classification evaluation: the jitted eval step, split-level metrics, and `mode='evaluate'`.

`mode='evaluate'` rebuilds the model from the checkpoint's own metadata, so any run's checkpoint can be evaluated
(or reused) without repeating its model config.
"""
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from sklearn import metrics as skmetrics

from vitprune_jax import checkpoints, parallel
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit


@functools.partial(jax.jit, static_argnames=('model',))
def eval_step(params: Any, batch: dict[str, jax.Array], model: vit.VisionTransformer) -> dict[str, jax.Array]:
  logits, _ = model.apply({'params': params}, batch['image'], train=False)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  return {'pred': jnp.argmax(logits, -1), 'loss': loss, 'label': batch['label'], 'mask': batch['mask']}


def classification_metrics(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
  return {
      'accuracy': float(np.mean(preds == labels)) if len(labels) else float('nan'),
      'macro_f1': float(skmetrics.f1_score(labels, preds, labels=np.arange(num_classes), average='macro',
                                           zero_division=0)),
  }


def evaluate_params(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any, split: str,
                    mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Accuracy, macro-F1 and mean loss of `params` on every example of `split` (over all hosts)."""
  ds = input_pipeline.make_dataset(config, split, global_batch_size=config.eval.batch_size, train=False)
  outs = []
  for batch in input_pipeline.as_numpy(ds):
    out = eval_step(params, parallel.shard_batch(batch, mesh), model)
    outs.append(multihost_utils.process_allgather(out, tiled=True))
  cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
  keep = cat['mask'] > 0
  result = classification_metrics(cat['pred'][keep], cat['label'][keep], model.config.num_classes)
  result.update(loss=float(np.mean(cat['loss'][keep])), num_examples=int(keep.sum()))
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


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`mode='evaluate'`: accuracy and macro-F1 of a checkpoint on `config.eval.split`."""
  mesh = parallel.make_mesh()
  parallel.check_global_batch(config.eval.batch_size, 'eval.batch_size')
  source = config.eval.checkpoint_dir or workdir
  model, params, meta = load_model_for_reuse(config, source, mesh)
  split = config.eval.split
  result = evaluate_params(config, model, params, split, mesh)
  results = {f'{split}_accuracy': result['accuracy'], f'{split}_macro_f1': result['macro_f1'],
             f'{split}_loss': result['loss'], 'split': split, 'num_examples': result['num_examples'],
             'dataset': config.dataset.name, 'checkpoint_dir': meta['checkpoint_dir'],
             'checkpoint_step': meta['checkpoint_step']}
  logging.info('Evaluation: %s', results)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'evaluate_results.json'), 'w') as f:
      json.dump(results, f, indent=2)
  print(json.dumps(results))
  return results
