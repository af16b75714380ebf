"""Learned policies as pruners of the comparison harness, with real token removal at inference.

At inference a policy acts greedily (keep iff its keep logit >= 0). Decisions differ per image, so compact mode
needs a static capacity per layer: `bucket_capacities` takes the most tokens the policy kept on the validation
split at each layer, rounded up to a bucket. Tokens the policy prunes stay masked inside the capacity; GFLOPs
and throughput are those of the capacities, i.e. what really runs.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitprune_jax.models import vit
from vitprune_jax.pruning.pruners import Pruner
from vitprune_jax.rl import pruning_env, two_agent_env

Array = jax.Array
_KEEP_ALL = 1e9  # Score for layers without a pruning point: everything passes the threshold.


def mappo_score_fn(cfg: vit.ViTConfig, actor: nn.Module, actor_params: Any, points: Sequence[int]):
  """Score = the actor's keep logit at the pruning points (same observation as in training)."""
  points = tuple(points)

  def score(layer: int, x: Array, keep_mask: Array, stats: vit.TokenStats, key: Array) -> Array:
    del key
    if layer not in points:
      return jnp.full(keep_mask.shape, _KEEP_ALL)
    t = jnp.asarray(points.index(layer), jnp.int32)
    obs = jax.vmap(lambda xi, ki, c, m: pruning_env.observe(cfg, xi, ki, t, c, m, len(points)))(
        x, keep_mask, stats.cls_attention, stats.mean_attention)
    return actor.apply(actor_params, obs.obs)

  return score


def two_agent_score_fn(cfg: vit.ViTConfig, actor: nn.Module, actor_params: Any, point: int):
  """Score = logit of the probability that a token survives the vote (either agent votes keep).

  Thresholding it at 0 keeps the tokens more likely kept than not under the trained (stochastic) policy; taking
  each agent's own most likely vote instead would prune everything when both agents keep with p < 0.5.
  """

  def score(layer: int, x: Array, keep_mask: Array, stats: vit.TokenStats, key: Array) -> Array:
    del key
    if layer != point:
      return jnp.full(keep_mask.shape, _KEEP_ALL)
    obs = jax.vmap(lambda xi, ki, c, m: two_agent_env.vote_features(cfg, xi, ki, vit.TokenStats(c, m)))(
        x, keep_mask, stats.cls_attention, stats.mean_attention)
    logits = actor.apply(actor_params, obs)
    n = x.shape[1]
    # log P(both vote prune) = log(1 - sigmoid(a)) + log(1 - sigmoid(s)); score = log(P(keep) / P(prune)).
    log_prune = jax.nn.log_sigmoid(-logits[:, :n]) + jax.nn.log_sigmoid(-logits[:, n:])
    return jnp.log(-jnp.expm1(log_prune)) - log_prune

  return score


def uncapped(cfg: vit.ViTConfig) -> tuple[int, ...]:
  return (cfg.num_tokens,) * cfg.num_layers


def bucket_capacities(kept_counts: np.ndarray, num_tokens: int, quantile: float, bucket: int
                      ) -> tuple[int, ...]:
  """Static per-layer capacities from per-image kept counts (images, layers): a quantile per layer, rounded up
  to `bucket`, never above the previous layer's."""
  caps, previous = [], num_tokens
  for kept in np.quantile(np.asarray(kept_counts, np.float64), quantile, axis=0):
    cap = min(previous, max(2, bucket * math.ceil(kept / bucket)))
    caps.append(int(cap))
    previous = cap
  return tuple(caps)


def make_policy_pruner(name: str, kind: str, cfg: vit.ViTConfig, actor: nn.Module, actor_params: Any,
                       meta: dict[str, Any], capacities: Sequence[int]) -> Pruner:
  if kind == 'mappo':
    score = mappo_score_fn(cfg, actor, actor_params, meta['points'])
  elif kind == 'two_agent':
    score = two_agent_score_fn(cfg, actor, actor_params, meta['point'])
  else:
    raise ValueError(f'unknown policy kind {kind!r}')
  return Pruner(name, score, tuple(int(c) for c in capacities), threshold=0.0)
