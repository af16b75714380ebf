"""Classification evaluation: the jitted eval function (optionally pruned) and metrics over batches.

`evaluate_params` takes the process-local numpy batches of one split (dicts with `image`, `label`
and `mask`, mask 0 marking padding), shards each over the mesh, runs the compiled forward and
gathers the per-example outputs of every process; the padding is dropped before any metric.
"""

import functools
import time
from collections.abc import Iterable
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from sklearn import metrics as skmetrics

from vitprune_jax import parallel, pruning
from vitprune_jax.models import vit


class EvalResult(NamedTuple):
  accuracy: float  # Top-1 over the real (mask 1) examples.
  macro_f1: float  # Unweighted mean of the per-class F1 over every class of the model.
  loss: float  # Mean cross-entropy.
  num_examples: int  # Real examples seen, over all processes.
  eval_time_s: float  # Wall time after compilation, reading the batches included.
  compile_time_s: float
  tokens_per_layer: list[float]  # Mean tokens (CLS included) kept after each layer.
  kept_counts: np.ndarray  # (num_examples, layers) int: tokens each image kept after each layer.
  correct: np.ndarray  # (num_examples,) bool: top-1 right, in the order of the batches.


@functools.lru_cache(maxsize=64)
def eval_fn(
  model: vit.VisionTransformer, pruner: Optional[pruning.Pruner] = None, execution: str = 'compact'
) -> Callable[..., dict[str, jax.Array]]:
  """Jitted `(params, batch, rng) -> per-example outputs`; one compile per argument triple."""
  if execution not in pruning.EXECUTIONS:
    raise ValueError(f'execution must be one of {pruning.EXECUTIONS}, got {execution!r}')

  def fn(params, batch, rng):
    hooks = pruning.model_hooks(pruner, execution=execution, rng=rng)
    logits, aux = model.apply({'params': params}, batch['image'], train=False, **hooks)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return {
      'pred': jnp.argmax(logits, -1),
      'loss': loss,
      'label': batch['label'],
      'mask': batch['mask'],
      'kept': jnp.stack(aux.kept, axis=1),
    }

  return jax.jit(fn)


def classification_metrics(
  preds: np.ndarray, labels: np.ndarray, num_classes: int
) -> dict[str, float]:
  return {
    'accuracy': float(np.mean(preds == labels)) if len(labels) else float('nan'),
    'macro_f1': float(
      skmetrics.f1_score(
        labels, preds, labels=np.arange(num_classes), average='macro', zero_division=0
      )
    ),
  }


def evaluate_params(
  model: vit.VisionTransformer,
  params: Any,
  batches: Iterable[dict[str, np.ndarray]],
  *,
  mesh: jax.sharding.Mesh,
  pruner: Optional[pruning.Pruner] = None,
  execution: str = 'compact',
  rng: jax.Array,
) -> EvalResult:
  """Metrics and kept-token counts of `model` (optionally pruned) over every batch, on all hosts.

  Args:
    model: the ViT.
    params: its parameters, replicated over `mesh`.
    batches: this process's slice of each global batch: numpy `image`, `label` and `mask`.
    mesh: the data-parallel mesh the batches are split over.
    pruner: None runs the model unpruned.
    execution: 'compact' or 'mask' (`pruning.EXECUTIONS`).
    rng: the pruner's key; batch i uses `fold_in(rng, i)`.

  Returns:
    The EvalResult over the real (mask 1) examples.

  Raises:
    ValueError: when `batches` is empty.
  """
  outs, fn, start, compile_time = [], None, None, 0.0
  for i, batch in enumerate(batches):
    batch = parallel.shard_batch(batch, mesh)
    key = jax.random.fold_in(rng, i)
    if fn is None:  # Compile ahead of time so the reported eval time is the steady state only.
      t0 = time.perf_counter()
      fn = eval_fn(model, pruner, execution).lower(params, batch, key).compile()
      start = time.perf_counter()
      compile_time = start - t0
    outs.append(multihost_utils.process_allgather(fn(params, batch, key), tiled=True))
  if not outs:
    raise ValueError('no batches')
  cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
  keep = cat['mask'] > 0
  metrics = classification_metrics(cat['pred'][keep], cat['label'][keep], model.config.num_classes)
  return EvalResult(
    accuracy=metrics['accuracy'],
    macro_f1=metrics['macro_f1'],
    loss=float(np.mean(cat['loss'][keep])),
    num_examples=int(keep.sum()),
    eval_time_s=time.perf_counter() - start,
    compile_time_s=compile_time,
    tokens_per_layer=[float(v) for v in cat['kept'][keep].mean(axis=0)],
    kept_counts=cat['kept'][keep],
    correct=cat['pred'][keep] == cat['label'][keep],
  )
