"""A tiny keep/prune game with a known optimal policy, to test the learner without a ViT.

Mirrors the token game: each of A agents plays T steps; at each step it sees a fresh random bit b
(feature 0, as +-1) and num_features - 1 distractor features (the env's `inputs`, fixed for the
episode, uninformative), and chooses keep (1) or prune (0). Pruning ends the agent's trajectory with
reward 0 (it is dead afterwards); keeping pays +1 if b = 1 and -1 if b = 0, and the agent plays on.

Optimum: with V_t the value of being alive before step t (V_T = 0), V_t = 0.5 * (1 + V_{t+1}) +
0.5 * max(0, V_{t+1} - 1). V_t < 1 always, so keeping a 0-bit (-1 + V_{t+1} < 0) is never worth it:
the optimal policy is keep iff b = 1, and its undiscounted return per agent is V_0 = 1 - 2**-T
(`optimal_return`). The critic's global state is [one-hot step, alive fraction]: the value depends
on the step, which no agent sees.

Randomness comes only from the keys, drawn on global (E, A) arrays, so it does not depend on how E
is sharded.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vitprune_jax.rl.learner import EnvFns, EnvObs


class ToyState(NamedTuple):
  bit: jax.Array  # (E, A) float 1/0: the bit each agent sees now.
  alive: jax.Array  # (E, A) float 1/0
  distractors: jax.Array  # (E, A, F - 1)
  t: jax.Array  # int32 scalar: steps played.


def optimal_return(num_steps: int) -> float:
  """Undiscounted expected return per agent of the optimal policy (keep iff bit = 1)."""
  return 1.0 - 2.0**-num_steps


def make_toy_inputs(key: jax.Array, num_envs: int, num_agents: int, num_features: int) -> jax.Array:
  """Distractor features (E, A, F - 1): the toy env's stand-in for images."""
  return jax.random.normal(key, (num_envs, num_agents, num_features - 1))


def make_toy_env(num_agents: int, num_features: int, num_steps: int) -> EnvFns:
  """`inputs` = `make_toy_inputs(...)` (E, A, num_features - 1); E is taken from it."""
  if num_features < 1 or num_steps < 1:
    raise ValueError(f'num_features={num_features} and num_steps={num_steps} must be >= 1.')

  def observe(state: ToyState) -> EnvObs:
    obs = jnp.concatenate([(2.0 * state.bit - 1.0)[..., None], state.distractors], axis=-1)
    one_hot_t = jax.nn.one_hot(state.t, num_steps)  # All zeros after the last step.
    alive_fraction = jnp.mean(state.alive, axis=-1, keepdims=True)
    global_state = jnp.concatenate(
      [jnp.broadcast_to(one_hot_t, (state.alive.shape[0], num_steps)), alive_fraction], axis=-1
    )
    return EnvObs(obs, global_state, state.alive)

  def reset(key: jax.Array, inputs: jax.Array) -> tuple[ToyState, EnvObs]:
    if inputs.shape[1:] != (num_agents, num_features - 1):
      raise ValueError(
        f'inputs {inputs.shape} must be (E, {num_agents}, {num_features - 1}): see make_toy_inputs.'
      )
    shape = (inputs.shape[0], num_agents)
    state = ToyState(
      jax.random.bernoulli(key, 0.5, shape).astype(jnp.float32),
      jnp.ones(shape, jnp.float32),
      inputs.astype(jnp.float32),
      jnp.zeros((), jnp.int32),
    )
    return state, observe(state)

  def step(
    key: jax.Array, state: ToyState, actions: jax.Array
  ) -> tuple[ToyState, EnvObs, jax.Array, jax.Array]:
    keep = (actions == 1).astype(jnp.float32)
    reward = state.alive * keep * (2.0 * state.bit - 1.0)
    last = (state.t == num_steps - 1).astype(jnp.float32)
    done = state.alive * jnp.maximum(1.0 - keep, last)
    next_state = ToyState(
      jax.random.bernoulli(key, 0.5, state.bit.shape).astype(jnp.float32),
      state.alive * keep,
      state.distractors,
      state.t + 1,
    )
    return next_state, observe(next_state), reward, done

  return EnvFns(reset, step, num_steps)


class TeamState(NamedTuple):
  bit: jax.Array  # (E, A) float 1/0.
  distractors: jax.Array  # (E, A, F - 1)


def optimal_team_return(num_agents: int, k: int) -> float:
  """Expected team reward of the optimal joint choice, E[min(#ones, k) / k] over fair bits."""
  total = sum(math.comb(num_agents, ones) * min(ones, k) / k for ones in range(num_agents + 1))
  return total / 2.0**num_agents


def make_team_env(num_agents: int, num_features: int, k: int) -> EnvFns:
  """A one-step team game in top-k mode: the A agents jointly keep exactly k of themselves.

  Each agent sees its fair random bit (feature 0, as +-1) and the distractors of `inputs`
  (`make_toy_inputs`); every agent gets the same reward, the share of the kept agents whose bit is
  1. No agent can earn it alone: it is the team's choice that pays. A random choice earns 0.5 on
  average; keeping the 1-bits first earns `optimal_team_return(num_agents, k)`.
  """
  if not 1 <= k <= num_agents:
    raise ValueError(f'k={k} must be in [1, num_agents={num_agents}].')

  def observe(state: TeamState, t: int) -> EnvObs:
    obs = jnp.concatenate([(2.0 * state.bit - 1.0)[..., None], state.distractors], axis=-1)
    e = state.bit.shape[0]
    alive = jnp.ones_like(state.bit)
    acting = alive * (1.0 - t)  # No decisions after the step.
    global_state = jnp.concatenate([jnp.mean(state.bit, -1, keepdims=True), jnp.ones((e, 1))], -1)
    return EnvObs(obs, global_state, alive, acting=acting, choose=jnp.full((e,), k, jnp.int32))

  def reset(key: jax.Array, inputs: jax.Array) -> tuple[TeamState, EnvObs]:
    bit = jax.random.bernoulli(key, 0.5, inputs.shape[:2]).astype(jnp.float32)
    state = TeamState(bit, inputs.astype(jnp.float32))
    return state, observe(state, 0)

  def step(
    key: jax.Array, state: TeamState, actions: jax.Array
  ) -> tuple[TeamState, EnvObs, jax.Array, jax.Array]:
    del key
    kept = (actions > 0).astype(jnp.float32)
    team = jnp.sum(kept * state.bit, -1, keepdims=True) / k
    reward = jnp.broadcast_to(team, state.bit.shape)
    return state, observe(state, 1), reward, jnp.ones_like(reward)

  return EnvFns(reset, step, 1)
