"""The data-parallel numbers of tests/test_parallel.py, computed on one mesh.

Three train steps of a 2-layer digits ViT (dropout on) on one fixed global batch of 32, then the
eval pass over the 359 digits test images in batches of 64 (the last one partial), unpruned and
with `cls_attention`, its kept-patch masks of the fixed batch and its picture of two test images.
Under several processes each feeds its slice of the batch and its shard of the test set.

The test calls `run(mesh, picture)` in its own process, on meshes of 1 and 8 devices. Each of two
JAX processes joined over localhost runs this file:

  JAX_COORDINATOR_ADDRESS=localhost:PORT JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=i \
    python tests/scripts/parallel_run.py PICTURE.png

and process 0 prints the globally gathered numbers as one JSON line.
"""

import json
import sys
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from tests.helpers import load_default_config, tiny_config
from vitprune_jax import parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.evaluation import evaluate, visualize
from vitprune_jax.jobs import common
from vitprune_jax.models import vit
from vitprune_jax.training import train

R_MAX, ALPHA = 0.7, 1.0


def run(mesh: jax.sharding.Mesh, picture: str) -> dict[str, Any]:
  """Train losses, gathered params, eval figures and kept masks on `mesh` (JSON-ready)."""
  config = tiny_config(load_default_config())
  config.model.dropout_rate = 0.1  # Dropout keys must not depend on the device count either.
  config.model.num_layers = 2  # So pruning after block 0 changes what the classifier sees.
  config.eval.batch_size = 64
  t = config.train
  model = vit.create_model(common.vit_config(config))
  _, image_shape = input_pipeline.model_input(common.data_spec(config))
  lr = train.create_learning_rate_fn(t.learning_rate, 10, t.num_epochs, t.warmup_epochs)
  optimizer = train.create_optimizer(
    lr, weight_decay=t.weight_decay, grad_clip_norm=t.grad_clip_norm
  )
  replicated = parallel.replicated_sharding(mesh)
  state = jax.jit(
    lambda k: train.create_train_state(k, model, optimizer, image_shape),
    out_shardings=replicated,
  )(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  # Random weight matrices (the zero-initialised head would make every logit 0, every loss ln 10).
  eval_params = jax.device_put(
    jax.tree_util.tree_map(
      lambda x: rng.normal(0, 0.5, x.shape).astype(np.float32) if x.ndim > 1 else x,
      state.params,
    ),
    replicated,
  )
  batch = {
    'image': rng.normal(size=(32, 8, 8, 1)).astype(np.float32),
    'label': rng.integers(0, 10, 32).astype(np.int32),
    'mask': np.ones(32, np.float32),
  }
  n = 32 // jax.process_count()
  local = {k: v[jax.process_index() * n : (jax.process_index() + 1) * n] for k, v in batch.items()}
  step = jax.jit(
    lambda s, b: train.train_step(s, b, num_classes=10, label_smoothing=0.1, learning_rate_fn=lr)
  )
  losses = []
  for _ in range(3):
    state, metrics = step(state, parallel.shard_batch(local, mesh))
    losses.append(float(metrics.compute()['loss']))
  params = multihost_utils.process_allgather(state.params, tiled=True)

  test_batches = common.split_batches(config, 'test')
  pruner = pruning.make_pruner('cls_attention', model.config, r_max=R_MAX, alpha=ALPHA)
  evals = {}
  for name, p in (('none', None), ('cls_attention', pruner)):
    r = evaluate.evaluate_params(
      model, eval_params, test_batches(), mesh=mesh, pruner=p, rng=jax.random.PRNGKey(0)
    )
    evals[name] = {
      'accuracy': r.accuracy,
      'macro_f1': r.macro_f1,
      'loss': r.loss,
      'num_examples': r.num_examples,
      'tokens_per_layer': r.tokens_per_layer,
      'kept_counts': np.asarray(r.kept_counts).tolist(),
    }

  # The masks of the fixed batch (the same 32 images under any process count); the picture, as
  # mode=evaluate draws it, of the first two images of the first eval batch (which ones depends on
  # how the test set is sharded over the processes).
  images = parallel.shard_batch(local, mesh)['image']
  masks = visualize.kept_masks(model, eval_params, images, pruner, jax.random.PRNGKey(0))
  first = parallel.shard_batch(next(test_batches()), mesh)['image']
  first_masks = visualize.kept_masks(model, eval_params, first, pruner, jax.random.PRNGKey(0))
  first = multihost_utils.process_allgather(first, tiled=True)
  figure = visualize.kept_patches_figure(first[:2], first_masks[:2], model.config, 'kept patches')
  common.save_figure(figure, picture, dpi=110)  # Process 0 writes.
  return {
    'devices': mesh.size,
    'processes': jax.process_count(),
    'losses': losses,
    'params': [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(params)],
    'eval': evals,
    'masks': np.asarray(masks).astype(int).tolist(),
  }


def main(picture: str) -> None:
  parallel.maybe_initialize_distributed()  # From the JAX_* launch variables.
  result = run(parallel.make_mesh(), picture)
  if jax.process_index() == 0:
    print(json.dumps(result))


if __name__ == '__main__':
  main(sys.argv[1])
