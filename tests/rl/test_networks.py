"""Actor and critic: shapes, near-uniform initial policy, one set of weights for every agent."""

import jax
import jax.numpy as jnp
import numpy as np

from vitprune_jax.rl import networks

E, A, F, G = 3, 5, 4, 6


def _inputs():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return jax.random.normal(k1, (E, G)), jax.random.normal(k2, (E, A, F))


def test_output_shapes_and_parameter_count_do_not_depend_on_agents():
  global_state, obs = _inputs()
  actor, critic = networks.Actor(8), networks.Critic(8)
  actor_params = actor.init(jax.random.PRNGKey(1), obs)
  critic_params = critic.init(jax.random.PRNGKey(2), global_state, obs)
  assert actor.apply(actor_params, obs).shape == (E, A)
  assert critic.apply(critic_params, global_state, obs).shape == (E, A)
  # Flat samples (global state already per agent) use the same params.
  flat_gs = jnp.broadcast_to(global_state[:, None], (E, A, G)).reshape(-1, G)
  np.testing.assert_allclose(
    critic.apply(critic_params, flat_gs, obs.reshape(-1, F)),
    critic.apply(critic_params, global_state, obs).reshape(-1),
    rtol=1e-6,
    atol=1e-6,
  )
  kernel_shapes = lambda p: [x.shape for x in jax.tree_util.tree_leaves(p)]
  assert kernel_shapes(actor_params) == kernel_shapes(actor.init(jax.random.PRNGKey(1), obs[:, :1]))
  assert critic_params['params']['head']['Dense_0']['kernel'].shape == (G + F, 8)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(critic_params))
  assert num_params == (G + F + 1) * 8 + 9 * 8 + 9


def test_actor_starts_near_keep_probability_one_half():
  _, obs = _inputs()
  actor = networks.Actor(64)
  params = actor.init(jax.random.PRNGKey(3), obs)
  probs = jax.nn.sigmoid(actor.apply(params, 3.0 * obs))
  assert float(jnp.max(jnp.abs(probs - 0.5))) < 0.02


def test_agents_are_a_batch_axis():
  """Each agent's output depends only on its own obs (and its env's state): permuting agents
  permutes outputs."""
  global_state, obs = _inputs()
  actor, critic = networks.Actor(8), networks.Critic(8)
  actor_params = actor.init(jax.random.PRNGKey(1), obs)
  critic_params = critic.init(jax.random.PRNGKey(2), global_state, obs)
  perm = jnp.array([4, 2, 0, 1, 3])
  np.testing.assert_allclose(
    actor.apply(actor_params, obs[:, perm]),
    actor.apply(actor_params, obs)[:, perm],
    rtol=1e-6,
    atol=1e-7,
  )
  np.testing.assert_allclose(
    critic.apply(critic_params, global_state, obs[:, perm]),
    critic.apply(critic_params, global_state, obs)[:, perm],
    rtol=1e-6,
    atol=1e-7,
  )
  # One agent's value does not change when another agent's obs does.
  changed = obs.at[:, 1:].set(0.0)
  np.testing.assert_allclose(
    critic.apply(critic_params, global_state, changed)[:, 0],
    critic.apply(critic_params, global_state, obs)[:, 0],
    rtol=1e-6,
    atol=1e-7,
  )
