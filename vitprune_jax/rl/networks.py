"""MAPPO actor and critic: small MLPs whose parameters are shared by every agent.

Agents are only a batch axis (the Dense layers act on the last, feature axis), so one set of
weights serves any number of tokens and the learner can flatten (step, env, agent) into one sample
axis. Initialisation follows purejaxrl / RL4EViT: orthogonal sqrt(2) hidden layers; the actor's
output gain 0.01 makes the initial policy nearly uniform (keep probability ~0.5), the critic's
output gain is 1.0.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


def _dense(features: int, gain: float) -> nn.Dense:
  return nn.Dense(
    features, kernel_init=nn.initializers.orthogonal(gain), bias_init=nn.initializers.zeros
  )


class _MLPHead(nn.Module):
  """Two tanh hidden layers and a scalar output per input row."""

  hidden_size: int
  output_gain: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.tanh(_dense(self.hidden_size, np.sqrt(2.0))(x))
    x = nn.tanh(_dense(self.hidden_size, np.sqrt(2.0))(x))
    return _dense(1, self.output_gain)(x)[..., 0]


class Actor(nn.Module):
  """obs (..., F) -> keep logit (...); the policy is `distrax.Bernoulli(logits=...)` (1 = keep).

  With `prior_weight` w, the logit is the MLP's plus a fixed prior, -w * obs[..., prior_index]
  (mappo: the token's redundancy, so the untrained policy already ranks as `similarity` does and
  training learns corrections to it).
  """

  hidden_size: int = 64
  prior_weight: float = 0.0
  prior_index: int = -1

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    logits = _MLPHead(self.hidden_size, 0.01, name='head')(obs)
    if self.prior_weight:
      logits = logits - self.prior_weight * obs[..., self.prior_index].astype(logits.dtype)
    return logits


class Critic(nn.Module):
  """(global_state, obs) -> value per agent, from the agent-specific state [global_state, own obs].

  The agent's own obs is needed because rewards have per-agent terms: one value per env could not
  tell a token about to be rewarded from one about to be pruned. `global_state` is either (..., G)
  with obs's leading dims, or (..., G) without obs's agent axis (obs (..., A, F)), in which case it
  is broadcast to every agent.
  """

  hidden_size: int = 64

  @nn.compact
  def __call__(self, global_state: jax.Array, obs: jax.Array) -> jax.Array:
    if global_state.ndim == obs.ndim - 1:
      global_state = global_state[..., None, :]
    lead = jnp.broadcast_shapes(global_state.shape[:-1], obs.shape[:-1])
    x = jnp.concatenate(
      [
        jnp.broadcast_to(global_state, lead + global_state.shape[-1:]),
        jnp.broadcast_to(obs, lead + obs.shape[-1:]),
      ],
      axis=-1,
    )
    return _MLPHead(self.hidden_size, 1.0, name='head')(x)
