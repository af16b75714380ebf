"""Seed 000's game: an attention agent and a similarity agent vote once on every token.

After block `point` each patch token gets two votes, keep (1) or prune (0): one from the attention
agent, which sees the token's CLS attention and mean received attention, and one from the similarity
agent, which sees the token's redundancy (highest cosine similarity to another patch) and its cosine
similarity to CLS. A token is pruned only if both agents vote to prune it. The rest of the ViT then
runs on the survivors (mask mode). One episode is one step; every vote of an image shares the reward

  r = w_a * max(log p(y | pruned) - log p(y | unpruned), -c) - lambda * |achieved ratio - target|,

with w_a = `accuracy_weight`, c = `accuracy_clip`, lambda = `ratio_penalty` and target =
`target_prune_ratio`, so the two agents cooperate to keep accuracy while meeting the target. The
agents share one network and are told apart by a one-hot type feature (parameter sharing across
agent types, as MAPPO does across agents). Agent slots: [attention votes for tokens 0..N-1,
similarity votes for tokens 0..N-1]; the CLS slots are dead.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vitprune_jax.models import vit
from vitprune_jax.pruning import pruners
from vitprune_jax.rl import pruning_env
from vitprune_jax.rl.learner import EnvFns, EnvObs

Array = jax.Array
NUM_FEATURES = 6


class TwoAgentState(NamedTuple):
  x: Array  # (N, D) tokens after block `point`.
  label: Array
  ref_log_prob: Array
  keep: Array  # (N,) after the vote (all ones before).
  correct: Array  # Pruned prediction correct (after the step).


def check_point(num_layers: int, point: int) -> int:
  """`point` as an int; ValueError unless it is a block index below the last."""
  if not 0 <= point < num_layers - 1:
    raise ValueError(
      f'the two-agent point must be a block index below {num_layers - 1}, got {point}'
    )
  return int(point)


def target_capacities(
  vit_cfg: vit.ViTConfig, point: int, target_prune_ratio: float
) -> tuple[int, ...]:
  """Tokens kept after each layer at the target ratio, CLS included.

  Every token up to block `point`, then CLS and the kept share of the patches, rounded up.
  """
  kept = 1 + math.ceil((1.0 - target_prune_ratio) * vit_cfg.num_patches)
  return (vit_cfg.num_tokens,) * point + (kept,) * (vit_cfg.num_layers - point)


def vote_features(vit_cfg: vit.ViTConfig, x: Array, keep: Array, stats: vit.TokenStats) -> Array:
  """(2N, 6) observations of one image: attention agent's slots, then the similarity agent's."""
  n = vit_cfg.num_tokens
  slots = x.shape[0]
  x = jax.lax.stop_gradient(x.astype(jnp.float32))
  redundancy = -pruners.similarity_score(0, x[None], keep[None], None, None)[0]
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  to_cls = xn @ xn[0]
  zeros, ones = jnp.zeros((slots,)), jnp.ones((slots,))
  attention = jnp.stack(
    [stats.cls_attention * n, stats.mean_attention * n, zeros, zeros, ones, zeros], -1
  )
  similarity = jnp.stack([zeros, zeros, redundancy, to_cls, zeros, ones], -1)
  return jnp.concatenate([attention, similarity], axis=0)


def combine_votes(votes: Array, keep: Array) -> Array:
  """Token kept if either agent votes keep; (2N,) votes -> (N,) keep mask (CLS always kept)."""
  n = keep.shape[-1]
  kept = jnp.maximum(votes[..., :n], votes[..., n:]).astype(jnp.float32)
  return (keep * kept).at[..., 0].set(1.0)


def make_env(
  model: vit.VisionTransformer,
  params: Any,
  *,
  point: int,
  accuracy_weight: float,
  target_prune_ratio: float,
  ratio_penalty: float,
  accuracy_clip: float = 5.0,
) -> EnvFns:
  """The one-step voting game over batches of {'image': (E, H, W, C), 'label': (E,)}.

  Args:
    model: the VisionTransformer.
    params: its parameters (frozen).
    point: the block after which both agents vote.
    accuracy_weight: w_a, weight of the shared accuracy reward.
    target_prune_ratio: share of the patches the votes should prune.
    ratio_penalty: lambda, weight of the distance to the target ratio.
    accuracy_clip: c, floor on the log-probability change in the accuracy reward.

  Returns:
    The EnvFns (T = 1), with metrics 'kept_fraction' and 'accuracy'. A bad point is a ValueError.
  """
  vit_cfg = model.config
  point = check_point(vit_cfg.num_layers, point)
  params = jax.lax.stop_gradient(params)
  n = vit_cfg.num_tokens

  def run(x, keep, layers):
    return pruning_env.run_blocks(model, params, x, keep, layers)[:2]

  def observe(x, keep, stats):
    stats = vit.TokenStats(stats.cls_attention[0], stats.mean_attention[0])
    obs = vote_features(vit_cfg, x, keep, stats)
    alive = jnp.concatenate([keep, keep]).at[0].set(0.0).at[n].set(0.0)
    pooled = jnp.mean(x.astype(jnp.float32), axis=0)
    global_state = jnp.concatenate([pooled, x[0].astype(jnp.float32)])
    return EnvObs(obs=obs, global_state=global_state, alive=alive)

  def reset_one(image, label):
    keep = jnp.ones((n,), jnp.float32)
    x, stats = run(pruning_env.embed_one(model, params, image), keep, range(point + 1))
    full, _ = run(x, keep, range(point + 1, vit_cfg.num_layers))
    ref = jax.nn.log_softmax(pruning_env.readout_one(model, params, full))[label]
    state = TwoAgentState(x=x, label=label, ref_log_prob=ref, keep=keep, correct=jnp.zeros(()))
    return state, observe(x, keep, stats)

  def step_one(state, votes):
    keep = combine_votes(votes, state.keep)
    x, stats = run(state.x, keep, range(point + 1, vit_cfg.num_layers))
    logits = pruning_env.readout_one(model, params, x)
    log_prob = jax.nn.log_softmax(logits)[state.label]
    achieved = 1.0 - jnp.sum(keep[1:]) / (n - 1)
    shared = accuracy_weight * jnp.maximum(
      log_prob - state.ref_log_prob, -accuracy_clip
    ) - ratio_penalty * jnp.abs(achieved - target_prune_ratio)
    correct = (jnp.argmax(logits) == state.label).astype(jnp.float32)
    new = state._replace(keep=keep, correct=correct)
    obs = observe(x, keep, stats)
    reward = jnp.full((2 * n,), shared).at[0].set(0.0).at[n].set(0.0)
    return new, obs, reward, jnp.ones((2 * n,))

  def metrics(state: TwoAgentState) -> dict[str, Array]:
    return {
      'kept_fraction': jnp.mean(jnp.sum(state.keep[:, 1:], -1) / (n - 1)),
      'accuracy': jnp.mean(state.correct),
    }

  return EnvFns(
    reset=lambda key, inputs: jax.vmap(reset_one)(inputs['image'], inputs['label']),
    step=lambda key, state, actions: jax.vmap(step_one)(state, actions),
    num_steps=1,
    metrics=metrics,
  )
