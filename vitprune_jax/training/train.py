"""Supervised ViT training as pure functions: the optimizer, the train state and one jitted step.

The step is a pure function `(state, batch) -> (state, metrics)`; the caller jits it once, splits
the batch over all devices and replicates the params (see `parallel.py`). The step's dropout key is
`fold_in(state.rng, step)`, so with a data order that is a pure function of (seed, epoch) a resumed
run ends with the same parameters as one that was never interrupted. The loop lives in
`jobs/train.py`.
"""

from typing import Optional

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics
from flax.training import train_state

from vitprune_jax import pruning
from vitprune_jax.models import vit


class TrainState(train_state.TrainState):
  rng: jax.Array  # Base key for dropout; each step uses fold_in(rng, step), never the key itself.


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Average.from_output('accuracy')
  grad_norm: metrics.Average.from_output('grad_norm')
  learning_rate: metrics.LastValue.from_output('learning_rate')


def create_learning_rate_fn(
  base_lr: float, steps_per_epoch: int, num_epochs: int, warmup_epochs: float
) -> optax.Schedule:
  """Linear warm-up from 0 to `base_lr` over `warmup_epochs`, then cosine decay to 0 at the end."""
  total = num_epochs * steps_per_epoch
  warmup = int(warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(0.0, base_lr, max(warmup, 1), max(total, warmup + 1))


def create_optimizer(
  learning_rate_fn: optax.Schedule, *, weight_decay: float, grad_clip_norm: float
) -> optax.GradientTransformation:
  """AdamW (no decay on biases, norms, embeddings' 1-D params) after global-norm clipping."""
  decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
  return optax.chain(
    optax.clip_by_global_norm(grad_clip_norm),
    optax.adamw(learning_rate_fn, weight_decay=weight_decay, mask=decay_mask),
  )


def create_train_state(
  rng: jax.Array,
  model: vit.VisionTransformer,
  optimizer: optax.GradientTransformation,
  image_shape: tuple[int, int, int],
) -> TrainState:
  init_rng, dropout_rng = jax.random.split(rng)
  params = model.init(init_rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer, rng=dropout_rng)


def cross_entropy(
  logits: jax.Array,
  labels: jax.Array,
  mask: jax.Array,
  num_classes: int,
  label_smoothing: float = 0.0,
) -> jax.Array:
  """Mean smoothed cross-entropy over the examples with mask 1 (padding rows count for nothing)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  *,
  num_classes: int,
  label_smoothing: float,
  learning_rate_fn: optax.Schedule,
  pruner: Optional[pruning.Pruner] = None,
  prune_execution: str = 'compact',
) -> tuple[TrainState, TrainMetrics]:
  """One AdamW step; with a pruner in compact mode the forward really runs on fewer tokens (cheaper
  steps)."""
  dropout_rng, prune_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
  hooks = pruning.model_hooks(pruner, execution=prune_execution, rng=prune_rng)

  def loss_fn(params):
    logits, _ = state.apply_fn(
      {'params': params},
      batch['image'],
      train=True,
      rngs={'dropout': dropout_rng},
      **hooks,
    )
    loss = cross_entropy(logits, batch['label'], batch['mask'], num_classes, label_smoothing)
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']
  step_metrics = TrainMetrics.single_from_model_output(
    loss=loss,
    accuracy=jnp.sum(correct) / jnp.maximum(jnp.sum(batch['mask']), 1.0),
    grad_norm=optax.global_norm(grads),
    learning_rate=learning_rate_fn(state.step),
  )
  return state.apply_gradients(grads=grads), step_metrics
