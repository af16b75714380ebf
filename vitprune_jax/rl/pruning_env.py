"""The token-pruning Markov game (RL4EViT) as pure functions over a frozen ViT.

One episode = one image passing through the ViT. A pruning point follows each block listed in
`points` (default: every block but the last). At pruning point t every still-kept patch token is an
agent and chooses keep (1) or prune (0); CLS is always kept and is not an agent; a pruned token
stays pruned. The blocks up to the next pruning point then run on the survivors in mask mode, and
after the last point the rest of the ViT gives the logits. The ViT runs through its stage methods
(`model.apply(..., method='embed' | 'block' | 'readout')`). A batch of images is a batch of
environments: `reset_one`/`step_one` handle one image and are `vmap`-ed.

Observation of token i at point t (features F = D + 6): its embedding (no gradient flows into the
ViT), its CLS attention and mean received attention (both times N, so ~1 on average), its
redundancy (highest cosine similarity to another kept patch), t / T, the fraction of patches still
kept, and whether it is alive. Global state for the centralised critic (G = 2D + 2): mean embedding
of the kept tokens, the CLS embedding, t / T and the kept fraction.

Reward of token agent i of an image at point t (every agent's trajectory lasts the whole episode; a
pruned agent just stops acting), with w_e = `efficiency_weight`, w_a = `accuracy_weight`:

  r_i,t = w_e * s_t * [i prunes itself at t]                              (individual: efficiency)
        + w_a * max(log p(y | pruned) - log p(y | unpruned), -c) * [t = T-1]   (shared: accuracy)

where s_t = (L - 1 - p_t) / L is the share of the blocks a token pruned after block p_t no longer
runs, y is the true label, the unpruned log-probability comes from the same frozen ViT, and
c = `accuracy_clip`. The shared term makes the agents collaborate on the prediction; the individual
term makes each of them want to leave.
"""

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vitprune_jax.models import vit
from vitprune_jax.pruning import pruners
from vitprune_jax.rl.learner import EnvFns, EnvObs

Array = jax.Array


class PruningState(NamedTuple):
  x: Array  # (N, D) tokens after the last block run.
  keep: Array  # (N,) keep mask.
  t: Array  # Pruning point index.
  cls_attention: Array  # (N,) of the last block run.
  mean_attention: Array  # (N,)
  label: Array
  ref_log_prob: Array  # log p(y) of the unpruned ViT.
  correct: Array  # 1.0 if the pruned prediction is right (set at the last step).


def default_points(num_layers: int) -> tuple[int, ...]:
  """Every block but the last (after the last block only the head reads CLS)."""
  return tuple(range(num_layers - 1))


def check_points(num_layers: int, points: Sequence[int]) -> tuple[int, ...]:
  """`points` as a tuple; ValueError unless they are increasing block indices below the last."""
  points = tuple(int(p) for p in points)
  if (
    not points
    or any(not 0 <= p < num_layers - 1 for p in points)
    or list(points) != sorted(set(points))
  ):
    raise ValueError(
      f'pruning points must be increasing block indices below {num_layers - 1}, got {points}'
    )
  return points


def num_features(vit_cfg: vit.ViTConfig) -> int:
  return vit_cfg.hidden_size + 6


def embed_one(model: vit.VisionTransformer, params: Any, image: Array) -> Array:
  """Tokens (N, D) of one image (H, W, C), as block 0 sees them."""
  return model.apply({'params': params}, image[None], method='embed')[0]


def readout_one(model: vit.VisionTransformer, params: Any, x: Array) -> Array:
  """Logits (classes,) from the tokens (N, D) of one image after the last block."""
  return model.apply({'params': params}, x[None], method='readout')[0]


def run_blocks(
  model: vit.VisionTransformer, params: Any, x: Array, keep: Array, layers: Sequence[int]
) -> tuple[Array, Any]:
  """Blocks `layers` on one image's tokens (N, D) under keep mask (N,) (a batch of 1 inside).

  Returns the tokens and the last block's `TokenStats` (batch axis kept; None if `layers` is empty).
  """
  stats = None
  for layer in layers:
    x, probs = model.apply({'params': params}, layer, x[None], keep[None], method='block')
    x = x[0]
    stats = vit.token_statistics(probs, keep[None])
  return x, stats


def observe(
  vit_cfg: vit.ViTConfig,
  x: Array,
  keep: Array,
  t: Array,
  cls_attention: Array,
  mean_attention: Array,
  num_points: int,
) -> EnvObs:
  """Agents' observations and the critic's state of one image.

  Scales use the full token count, so the same observation comes out in mask mode (N slots) and
  compact mode (fewer slots holding the same kept tokens).

  Args:
    vit_cfg: the ViT's geometry.
    x: tokens (slots, D).
    keep: keep mask (slots,).
    t: pruning point index (int32 scalar).
    cls_attention: (slots,) of the last block run.
    mean_attention: (slots,) of the last block run.
    num_points: T, the number of pruning points.

  Returns:
    EnvObs without the env axis: obs (slots, D + 6), global_state (2D + 2,), alive, acting (slots,).
  """
  n = vit_cfg.num_tokens
  x = jax.lax.stop_gradient(x.astype(jnp.float32))
  slots = x.shape[0]
  redundancy = -pruners.similarity_score(0, x[None], keep[None], None, None)[0]
  frac = jnp.sum(keep[1:]) / (n - 1)
  t_frac = t.astype(jnp.float32) / num_points
  per_token = jnp.stack(
    [
      cls_attention * n,
      mean_attention * n,
      redundancy,
      jnp.full((slots,), t_frac),
      jnp.full((slots,), frac),
      keep,
    ],
    axis=-1,
  )
  obs = jnp.concatenate([x, per_token], axis=-1)
  pooled = jnp.sum(x * keep[:, None], axis=0) / jnp.maximum(jnp.sum(keep), 1.0)
  global_state = jnp.concatenate([pooled, x[0], jnp.stack([t_frac, frac])])
  # Every patch token stays in the episode (it shares the final reward); only kept ones still
  # decide. CLS is not an agent.
  alive = jnp.ones_like(keep).at[0].set(0.0)
  return EnvObs(obs=obs, global_state=global_state, alive=alive, acting=keep.at[0].set(0.0))


def _observe_state(vit_cfg: vit.ViTConfig, state: PruningState, num_points: int) -> EnvObs:
  return observe(
    vit_cfg, state.x, state.keep, state.t, state.cls_attention, state.mean_attention, num_points
  )


def make_env(
  model: vit.VisionTransformer,
  params: Any,
  *,
  accuracy_weight: float,
  efficiency_weight: float,
  points: Sequence[int] = (),
  accuracy_clip: float = 5.0,
) -> EnvFns:
  """The game over batches of {'image': (E, H, W, C), 'label': (E,)} for the frozen ViT.

  Args:
    model: the VisionTransformer.
    params: its parameters (frozen: no gradient flows into them).
    accuracy_weight: w_a, weight of the shared accuracy reward.
    efficiency_weight: w_e, weight of each pruned token's efficiency reward.
    points: blocks after which the agents act; () = every block but the last.
    accuracy_clip: c, floor on the log-probability change in the accuracy reward.

  Returns:
    The EnvFns (T = len(points) steps), with metrics 'kept_fraction' and 'accuracy'.
    Bad points are a ValueError.
  """
  vit_cfg = model.config
  points = check_points(vit_cfg.num_layers, tuple(points) or default_points(vit_cfg.num_layers))
  num_points = len(points)
  params = jax.lax.stop_gradient(params)
  # Segment j runs the blocks after point j up to point j+1 (the last one: to the end, then the
  # head).
  segments = [range(points[j] + 1, points[j + 1] + 1) for j in range(num_points - 1)]
  segments.append(range(points[-1] + 1, vit_cfg.num_layers))
  saved_share = jnp.asarray(
    [(vit_cfg.num_layers - 1 - p) / vit_cfg.num_layers for p in points], jnp.float32
  )

  def reset_one(image: Array, label: Array) -> tuple[PruningState, EnvObs]:
    keep = jnp.ones((vit_cfg.num_tokens,), jnp.float32)
    x0 = embed_one(model, params, image)
    x, stats = run_blocks(model, params, x0, keep, range(points[0] + 1))
    full, _ = run_blocks(model, params, x, keep, range(points[0] + 1, vit_cfg.num_layers))
    ref = jax.nn.log_softmax(readout_one(model, params, full))[label]
    state = PruningState(
      x=x,
      keep=keep,
      t=jnp.zeros((), jnp.int32),
      cls_attention=stats.cls_attention[0],
      mean_attention=stats.mean_attention[0],
      label=label,
      ref_log_prob=ref,
      correct=jnp.zeros(()),
    )
    return state, _observe_state(vit_cfg, state, num_points)

  def step_one(
    state: PruningState, action: Array, t: int
  ) -> tuple[PruningState, EnvObs, Array, Array]:
    """Pruning point t (a Python int: every image is at the same point) on one image."""
    deciding = state.keep.at[0].set(0.0)
    keep = state.keep * jnp.where(deciding > 0, action.astype(jnp.float32), 1.0)
    pruned_now = deciding * (1.0 - keep)
    x, stats = run_blocks(model, params, state.x, keep, segments[t])
    last = t == num_points - 1
    if last:
      logits = readout_one(model, params, x)
      cls_att = mean_att = jnp.zeros((vit_cfg.num_tokens,), jnp.float32)
      log_prob = jax.nn.log_softmax(logits)[state.label]
      accuracy = accuracy_weight * jnp.maximum(log_prob - state.ref_log_prob, -accuracy_clip)
      correct = (jnp.argmax(logits) == state.label).astype(jnp.float32)
    else:
      cls_att, mean_att = stats.cls_attention[0], stats.mean_attention[0]
      accuracy, correct = jnp.zeros(()), state.correct
    # Every token agent (CLS excluded) shares the accuracy term, pruned ones included.
    reward = (efficiency_weight * saved_share[t] * pruned_now + accuracy).at[0].set(0.0)
    new = state._replace(
      x=x, keep=keep, t=state.t + 1, cls_attention=cls_att, mean_attention=mean_att, correct=correct
    )
    done = jnp.full((vit_cfg.num_tokens,), float(last))
    info_obs = _observe_state(
      vit_cfg, new._replace(t=jnp.minimum(new.t, num_points - 1)), num_points
    )
    return new, info_obs, reward, done

  def reset(key: Array, inputs: dict[str, Array]) -> tuple[PruningState, EnvObs]:
    del key
    return jax.vmap(reset_one)(inputs['image'], inputs['label'])

  def step_at(t: int):
    """The step at pruning point t: only segment t of the ViT runs."""

    def step(key: Array, state: PruningState, actions: Array):
      del key
      return jax.vmap(lambda s, a: step_one(s, a, t))(state, actions)

    return step

  def step(
    key: Array, state: PruningState, actions: Array
  ) -> tuple[PruningState, EnvObs, Array, Array]:
    # Every image is at the same point, so the index is one unbatched scalar: a real conditional
    # that runs one segment (a per-image index under vmap would run every segment).
    return jax.lax.switch(state.t[0], [step_at(t) for t in range(num_points)], key, state, actions)

  def metrics(state: PruningState) -> dict[str, Array]:
    kept = jnp.sum(state.keep[:, 1:], -1) / (vit_cfg.num_tokens - 1)
    return {'kept_fraction': jnp.mean(kept), 'accuracy': jnp.mean(state.correct)}

  return EnvFns(reset=reset, step=step, num_steps=num_points, metrics=metrics, step_at=step_at)
