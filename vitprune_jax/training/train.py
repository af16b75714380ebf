"""Supervised ViT training as pure functions: the optimizer, the train state and one jitted step.

The step optionally augments the batch on device (`BatchAugment`: mixup, cutmix, random erasing,
`training/augment.py`) and distils a frozen teacher (`Distillation`: DynamicViT's KL on the logits
and MSE on the kept tokens), the teacher's forward inside the same jitted step.

The step is a pure function `(state, batch) -> (state, metrics)`; the caller jits it once, splits
the batch over all devices and replicates the params (see `parallel.py`). The step's dropout key is
`fold_in(state.rng, step)`, so with a data order that is a pure function of (seed, epoch) a resumed
run ends with the same parameters as one that was never interrupted. The loop lives in
`jobs/train.py`.
"""

from typing import Any, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics
from flax.training import train_state

from vitprune_jax import pruning
from vitprune_jax.models import vit
from vitprune_jax.training import augment

Array = jax.Array


class TrainState(train_state.TrainState):
  rng: jax.Array  # Base key for dropout; each step uses fold_in(rng, step), never the key itself.


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Average.from_output('accuracy')
  grad_norm: metrics.Average.from_output('grad_norm')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  distill_loss: metrics.Average.from_output('distill_loss')  # 0 without a teacher.


class BatchAugment(NamedTuple):
  """On-device augmentation of each training batch (DeiT: mixup 0.8, cutmix 1.0, erasing 0.25)."""

  mixup_alpha: float = 0.0  # Beta(a, a) of mixup; 0 = off.
  cutmix_alpha: float = 0.0  # Beta(a, a) of cutmix; 0 = off.
  switch_prob: float = 0.5  # Both on: the chance of cutmix rather than mixup for a batch.
  mix_prob: float = 1.0  # The chance a batch is mixed at all.
  erasing_prob: float = 0.0  # Per-image chance of random erasing.


class Distillation(NamedTuple):
  """A frozen teacher (its params are the step's `teacher_params`) and the loss weights:
  loss = CE + logit_weight * T^2 * KL(teacher_T || student_T) + token_weight * MSE(kept tokens)."""

  teacher: vit.VisionTransformer
  logit_weight: float = 0.5
  token_weight: float = 0.0
  temperature: float = 1.0


def create_learning_rate_fn(
  base_lr: float,
  steps_per_epoch: int,
  num_epochs: int,
  warmup_epochs: float,
  *,
  initial_lr: float = 0.0,
  final_lr: float = 0.0,
) -> optax.Schedule:
  """Linear warm-up from `initial_lr` to `base_lr` over `warmup_epochs`, then cosine decay to
  `final_lr` at the end of the last epoch (DeiT: 1e-6 and 1e-5), step by step."""
  total = num_epochs * steps_per_epoch
  warmup = int(warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(
    initial_lr, base_lr, max(warmup, 1), max(total, warmup + 1), end_value=final_lr
  )


def create_optimizer(
  learning_rate_fn: optax.Schedule, *, weight_decay: float, grad_clip_norm: float
) -> optax.GradientTransformation:
  """AdamW (no decay on biases, norms, embeddings' 1-D params) after global-norm clipping
  (`grad_clip_norm` 0: no clipping)."""
  decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim > 1, params)
  adamw = optax.adamw(learning_rate_fn, weight_decay=weight_decay, mask=decay_mask)
  if grad_clip_norm <= 0.0:
    return adamw
  return optax.chain(optax.clip_by_global_norm(grad_clip_norm), adamw)


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
  return soft_cross_entropy(logits, targets, mask)


def soft_cross_entropy(logits: Array, targets: Array, mask: Array) -> Array:
  """Mean cross-entropy against soft targets (B, classes) over the examples with mask 1."""
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def kl_distillation(
  student_logits: Array, teacher_logits: Array, mask: Array, temperature: float = 1.0
) -> Array:
  """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the examples with mask 1
  (DynamicViT's `kl_div(log_softmax(s), log_softmax(t), 'batchmean', log_target=True)` at T = 1).
  """
  log_s = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_t = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)
  return temperature**2 * jnp.sum(kl * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def kept_token_mse(
  student_tokens: Array, teacher_tokens: Array, keep_mask: Array, mask: Array
) -> Array:
  """Mean squared error between the student's and the teacher's final patch tokens (B, N, D), over
  the patches the student kept (keep_mask (B, N) > 0; CLS excluded) of the examples with mask 1
  (DynamicViT's token distillation). Needs the tokens at the same positions: mask execution."""
  kept = (keep_mask[:, 1:] > 0) * mask[:, None]
  sq = jnp.mean(jnp.square(student_tokens[:, 1:] - teacher_tokens[:, 1:]), axis=-1)
  return jnp.sum(sq * kept) / jnp.maximum(jnp.sum(kept), 1.0)


def augment_batch(
  key: Array, images: Array, targets: Array, aug: BatchAugment
) -> tuple[Array, Array]:
  """The batch (images, soft targets) after `aug`: mixup or cutmix, then random erasing."""
  k_mix, k_erase = jax.random.split(key)
  images, targets = augment.mixup_cutmix(
    k_mix,
    images,
    targets,
    mixup_alpha=aug.mixup_alpha,
    cutmix_alpha=aug.cutmix_alpha,
    switch_prob=aug.switch_prob,
    prob=aug.mix_prob,
  )
  if aug.erasing_prob > 0.0:
    keys = jax.random.split(k_erase, images.shape[0])
    erase = lambda k, im: augment.random_erasing(k, im, prob=aug.erasing_prob)
    images = jax.vmap(erase)(keys, images)
  return images, targets


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  teacher_params: Any = None,
  *,
  num_classes: int,
  label_smoothing: float,
  learning_rate_fn: optax.Schedule,
  pruner: Optional[pruning.Pruner] = None,
  prune_execution: str = 'compact',
  batch_augment: BatchAugment = BatchAugment(),
  distillation: Optional[Distillation] = None,
) -> tuple[TrainState, TrainMetrics]:
  """One AdamW step; with a pruner in compact mode the forward really runs on fewer tokens (cheaper
  steps). `teacher_params` are those of `distillation.teacher` (None without distillation)."""
  step_key = jax.random.fold_in(state.rng, state.step)
  dropout_rng, prune_rng = jax.random.split(step_key)
  hooks = pruning.model_hooks(pruner, execution=prune_execution, rng=prune_rng)
  targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], num_classes), label_smoothing)
  images, targets = augment_batch(
    jax.random.fold_in(step_key, 2), batch['image'], targets, batch_augment
  )
  if distillation is not None:
    t_logits, t_aux = distillation.teacher.apply({'params': teacher_params}, images, statistics=())
    t_logits, t_tokens = jax.lax.stop_gradient((t_logits, t_aux.tokens))

  def loss_fn(params):
    logits, aux = state.apply_fn(
      {'params': params},
      images,
      train=True,
      rngs={'dropout': dropout_rng},
      **hooks,
    )
    loss = soft_cross_entropy(logits, targets, batch['mask'])
    extra = jnp.zeros((), jnp.float32)
    if distillation is not None:
      d = distillation
      extra = d.logit_weight * kl_distillation(logits, t_logits, batch['mask'], d.temperature)
      if d.token_weight > 0.0:
        extra += d.token_weight * kept_token_mse(aux.tokens, t_tokens, aux.keep_mask, batch['mask'])
    return loss + extra, (logits, extra)

  (loss, (logits, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  correct = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']
  step_metrics = TrainMetrics.single_from_model_output(
    loss=loss,
    accuracy=jnp.sum(correct) / jnp.maximum(jnp.sum(batch['mask']), 1.0),
    grad_norm=optax.global_norm(grads),
    learning_rate=learning_rate_fn(state.step),
    distill_loss=extra,
  )
  return state.apply_gradients(grads=grads), step_metrics
