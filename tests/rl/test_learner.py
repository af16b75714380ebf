"""MAPPO learner: GAE and PPO loss against hand-computed numbers, learning the toy env's optimum,
determinism, and the same update on 1 and 8 (simulated) devices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from tests import helpers
from vitprune_jax import parallel
from vitprune_jax.models import vit
from vitprune_jax.rl import learner, networks, pruning_env, toy_env


def test_compute_gae_hand_example():
  """gamma = lam = 0.5 (gamma * lam = 0.25); T = 4, one env, three agents:

  agent 0: always alive, done at t=1 (a new trajectory starts at t=2), bootstraps from
  last_value = 2 at t=3:
    t=3: 4 + 0.5*2 - 2 = 3              -> A = 3
    t=2: 3 + 0.5*2 - 1.5 = 2.5          -> A = 2.5 + 0.25*3 = 3.25
    t=1: done: 2 - 1 = 1                -> A = 1 (t=2 does not leak back)
    t=0: 1 + 0.5*1 - 0.5 = 1            -> A = 1 + 0.25*1 = 1.25
  agent 1: done at t=1, dead at t=2, 3 (garbage rewards and values there):
    t=1: -1 - 2 = -3; t=0: 1 + 0.5*2 - 1 = 1 -> A = 1 + 0.25*(-3) = 0.25; dead steps A = 0.
  agent 2: as agent 1 but the env never says done: death alone must cut the bootstrap, same
  advantages.
  """
  reward = np.array([[1, 1, 1], [2, -1, -1], [3, 5, 5], [4, 5, 5]], np.float32)[:, None]
  value = np.array([[0.5, 1, 1], [1, 2, 2], [1.5, 7, 7], [2, 7, 7]], np.float32)[:, None]
  done = np.array([[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]], np.float32)[:, None]
  alive = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 0]], np.float32)[:, None]
  last_value = np.array([[2, 0, 0]], np.float32)
  advantages, returns = learner.compute_gae(reward, value, done, alive, 0.5, 0.5, last_value)
  expected = np.array([[1.25, 0.25, 0.25], [1, -3, -3], [3.25, 0, 0], [3, 0, 0]], np.float32)[
    :, None
  ]
  np.testing.assert_allclose(advantages, expected, rtol=1e-6)
  np.testing.assert_allclose((returns * alive)[:, 0, 0], [1.75, 2, 4.75, 5], rtol=1e-6)
  # Without last_value the final step does not bootstrap: agent 0's t=3 becomes 4 - 2 = 2, t=2
  # gets 0.25*2.
  advantages, _ = learner.compute_gae(reward, value, done, alive, 0.5, 0.5)
  np.testing.assert_allclose(advantages[2:, 0, 0], [3.0, 2.0], rtol=1e-6)


class _FixedActor(nn.Module):
  """Keep logit = obs[..., 0], so the test sets the policy directly."""

  @nn.compact
  def __call__(self, obs):
    return obs[..., 0]


class _FixedCritic(nn.Module):
  """Value = obs[..., 1]."""

  @nn.compact
  def __call__(self, global_state, obs):
    return obs[..., 1]


# The loss weights of the hand examples.
_COEFS = dict(clip_eps=0.2, value_clip_eps=0.2, value_coef=0.5, entropy_coef=0.01)


def test_ppo_loss_hand_example():
  """clip_eps = value_clip_eps = 0.2; every logit 0, so pi(a) = 0.5 and the entropy is ln 2 per
  alive sample.

  ratio, adv -> -min(r*adv, clip(r)*adv):  (1.5, +1) -> -1.2 (clipped); (1.5, -1) -> 1.5;
  (0.5, +1) -> -0.5; (0.5, -1) -> 0.8 (clipped); (1.1, +2) -> -2.2.
  Policy loss = (-1.2 + 1.5 - 0.5 + 0.8 - 2.2) / 5 = -0.32.
  (v_old, v, target) -> 0.5 * max((v-R)^2, (v_clip-R)^2): (0, 1, 1) -> 0.5*0.64 (clipped to 0.2);
  (0, 0.1, 1) -> 0.5*0.81; (1, 0, 0.5) -> 0.5*0.25 (unclipped bigger); (0, 0, 0) -> 0;
  (0, -1, -1) -> 0.5*0.64. Value loss = (0.32 + 0.405 + 0.125 + 0 + 0.32) / 5 = 0.234.
  The sixth sample is dead: wild numbers, no effect.
  """
  ratio = np.array([1.5, 1.5, 0.5, 0.5, 1.1, 3.0])
  batch = learner.Batch(
    obs=jnp.array([[0.0, 1.0], [0.0, 0.1], [0.0, 0.0], [0.0, 0.0], [0.0, -1.0], [0.0, 100.0]]),
    global_state=jnp.zeros((6, 1)),
    action=jnp.array([1, 0, 1, 0, 1, 1], jnp.int32),
    log_prob=jnp.asarray(np.log(0.5) - np.log(ratio), jnp.float32),
    value=jnp.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
    advantage=jnp.array([1.0, -1.0, 1.0, -1.0, 2.0, 10.0]),
    target=jnp.array([1.0, 1.0, 0.5, 0.0, -1.0, 0.0]),
    alive=jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
    acting=jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0]),
  )
  total, aux = learner.ppo_loss({}, {}, batch, _FixedActor(), _FixedCritic(), **_COEFS)
  assert float(aux['policy_loss']) == pytest.approx(-0.32, abs=1e-6)
  assert float(aux['value_loss']) == pytest.approx(0.234, abs=1e-6)
  assert float(aux['entropy']) == pytest.approx(math.log(2), abs=1e-6)
  assert float(total) == pytest.approx(-0.32 + 0.5 * 0.234 - 0.01 * math.log(2), abs=1e-6)
  assert float(aux['clip_fraction']) == pytest.approx(4 / 5, abs=1e-6)
  kl = sum((r - 1) - math.log(r) for r in ratio[:5]) / 5
  assert float(aux['approx_kl']) == pytest.approx(kl, abs=1e-6)


def test_ppo_config_defaults_are_the_default_config():
  """PPOConfig() is the learner of configs/default.py's `ppo` section."""
  ppo = helpers.load_default_config().ppo
  assert learner.PPOConfig() == learner.PPOConfig(**{k: ppo[k] for k in learner.PPOConfig._fields})


def _setup(ppo, num_envs=16, num_agents=8, num_features=4, num_steps=3, seed=0, hidden_size=64):
  env = toy_env.make_toy_env(num_agents, num_features, num_steps)
  actor, critic = networks.Actor(hidden_size), networks.Critic(hidden_size)
  init_key, inputs_key, reset_key = jax.random.split(jax.random.PRNGKey(seed), 3)
  inputs = toy_env.make_toy_inputs(inputs_key, num_envs, num_agents, num_features)
  _, sample_obs = env.reset(reset_key, inputs)
  state = learner.init_learner(init_key, ppo, actor, critic, sample_obs)
  return env, actor, critic, state


def test_toy_env_rules_and_optimum():
  """Keep iff bit = 1 earns 1 - 2**-T per agent; pruning kills the agent; the dead earn nothing."""
  env = toy_env.make_toy_env(num_agents=64, num_features=2, num_steps=3)
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(0), 256, 64, 2)
  state, obs = env.reset(jax.random.PRNGKey(1), inputs)
  total = jnp.zeros((256, 64))
  for t, key in enumerate(jax.random.split(jax.random.PRNGKey(2), 3)):
    bit = (obs.obs[..., 0] > 0).astype(jnp.int32)
    # Dead agents "keep" here: the env must ignore them.
    state, next_obs, reward, done = env.step(key, state, jnp.where(obs.alive > 0, bit, 1))
    np.testing.assert_array_equal(reward, obs.alive * bit)
    np.testing.assert_array_equal(next_obs.alive, obs.alive * bit)
    np.testing.assert_array_equal(done, obs.alive * (1 - bit) if t < 2 else obs.alive)
    np.testing.assert_array_equal(obs.global_state[:, t], 1.0)
    total, obs = total + reward, next_obs
  assert float(jnp.mean(total)) == pytest.approx(toy_env.optimal_return(3), abs=0.02)


def test_rollout_returns_the_bootstrap_value_and_final_state():
  """last_value = V(final obs) * alive after the last step; here V = obs[..., 1], the distractor."""
  env = toy_env.make_toy_env(num_agents=5, num_features=2, num_steps=3)
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(0), 4, 5, 2)
  state = learner.LearnerState({}, {}, (), (), jnp.zeros((), jnp.int32))
  transitions, info = learner.rollout(
    jax.random.PRNGKey(1), state, env, _FixedActor(), _FixedCritic(), inputs
  )
  assert isinstance(info, learner.RolloutInfo)
  assert transitions.action.shape == (3, 4, 5)
  alive_after = transitions.alive[-1] * transitions.action[-1]  # Kept at the last step.
  np.testing.assert_allclose(info.last_value, inputs[..., 0] * alive_after, rtol=1e-6)
  assert 0 < float(jnp.sum(alive_after)) < 20  # Some agents survive, some do not.
  assert int(info.env_state.t) == 3
  np.testing.assert_array_equal(info.env_state.alive, alive_after)


def test_learner_reaches_toy_optimum():
  """Default PPOConfig; the toy optimum (keep iff bit = 1) is reached in 100 updates of 16 envs x
  8 agents."""
  ppo = learner.PPOConfig()
  env, actor, critic, state = _setup(ppo)
  update = jax.jit(learner.make_update(ppo, env, actor, critic), donate_argnums=0)
  key = jax.random.PRNGKey(1)
  for _ in range(100):
    key, inputs_key, update_key = jax.random.split(key, 3)
    state, metrics = update(state, toy_env.make_toy_inputs(inputs_key, 16, 8, 4), update_key)
  assert int(state.step) == 100
  assert all(np.isfinite(float(v)) for v in metrics.values())
  # Evaluate the sampled (not greedy) policy on 2048 fresh envs (return noise ~1%).
  inputs_key, rollout_key = jax.random.split(key)
  transitions, _ = jax.jit(lambda k, s, x: learner.rollout(k, s, env, actor, critic, x))(
    rollout_key, state, toy_env.make_toy_inputs(inputs_key, 2048, 8, 4)
  )
  bit = (transitions.obs[..., 0] > 0).astype(jnp.int32)
  optimal_actions = float(
    jnp.sum((transitions.action == bit) * transitions.alive) / jnp.sum(transitions.alive)
  )
  mean_return = float(jnp.mean(jnp.sum(transitions.reward, axis=(0, 2)))) / 8
  assert optimal_actions >= 0.95
  assert mean_return == pytest.approx(toy_env.optimal_return(3), rel=0.05)


def test_update_is_deterministic_in_its_key():
  ppo = learner.PPOConfig()
  env, actor, critic, state = _setup(ppo, num_envs=4, num_agents=4)
  update = jax.jit(learner.make_update(ppo, env, actor, critic))
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(5), 4, 4, 4)

  def run(seed):
    s = state
    for key in jax.random.split(jax.random.PRNGKey(seed), 2):
      s, _ = update(s, inputs, key)
    leaves = jax.tree_util.tree_leaves((s.actor_params, s.critic_params))
    return np.concatenate([np.ravel(x) for x in leaves])

  first, again, other = run(0), run(0), run(1)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)


def test_minibatches_take_whole_groups_of_envs():
  """T = 3 steps into 5 minibatches: groups of 5 envs (15 units, 3 per minibatch); 4 envs do not
  form a group, and say what to change."""
  assert learner.shuffle_group(3, 5) == 5 and learner.shuffle_group(5, 4) == 4
  assert learner.shuffle_group(4, 4) == 1 and learner.shuffle_group(6, 4) == 2
  ppo = learner.PPOConfig(num_minibatches=5)
  env, actor, critic, state = _setup(ppo, num_envs=5, num_agents=4)
  update = jax.jit(learner.make_update(ppo, env, actor, critic))
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(0), 5, 4, 4)
  _, metrics = update(state, inputs, jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics['total_loss']))
  with pytest.raises(ValueError, match='use a multiple of 5 envs per device'):
    update(state, toy_env.make_toy_inputs(jax.random.PRNGKey(0), 4, 4, 4), jax.random.PRNGKey(0))


def _two_updates(mesh):
  """Two updates of the toy game with the inputs split over `mesh` along E, state replicated."""
  ppo = learner.PPOConfig()
  num_envs, num_agents, num_features, num_steps = 16, 4, 3, 3
  env = toy_env.make_toy_env(num_agents, num_features, num_steps)
  actor, critic = networks.Actor(16), networks.Critic(16)
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(1), num_envs, num_agents, num_features)
  _, sample_obs = env.reset(jax.random.PRNGKey(2), inputs)
  state = jax.jit(
    lambda k: learner.init_learner(k, ppo, actor, critic, sample_obs),
    out_shardings=parallel.replicated_sharding(mesh),
  )(jax.random.PRNGKey(0))
  inputs = jax.device_put(inputs, parallel.batch_sharding(mesh))
  update = jax.jit(learner.make_update(ppo, env, actor, critic), donate_argnums=0)
  returns = []
  for key in jax.random.split(jax.random.PRNGKey(3), 2):
    state, metrics = update(state, inputs, key)
    returns.append(float(metrics['episode_return']))
  return returns, jax.device_get((state.actor_params, state.critic_params))


def test_eight_devices_match_one_device():
  """Inputs split over 8 devices along E, learner state replicated: same params as on 1 device."""
  assert jax.device_count() == 8  # tests/conftest.py simulates 8 CPU devices.
  one_returns, one = _two_updates(parallel.make_mesh(jax.devices()[:1]))
  eight_returns, eight = _two_updates(parallel.make_mesh(jax.devices()))
  assert eight_returns == one_returns
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(b, a, atol=1e-5), one, eight)


def _sharded_pruning_update(mesh, action_mode='free'):
  """One data-parallel update (shard_map) of the token-pruning game on a random 2-block ViT."""
  vit_cfg = vit.ViTConfig(
    num_classes=10,
    image_size=8,
    patch_size=2,
    hidden_size=16,
    num_layers=2,
    num_heads=2,
    mlp_dim=32,
    num_channels=1,
  )
  model = vit.VisionTransformer(vit_cfg)
  images = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), images[:1])['params']
  head = dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (16, 10)), bias=jnp.zeros(10))
  params = dict(params, head=head)
  env = pruning_env.make_env(
    model, params, accuracy_weight=1.0, efficiency_weight=0.1, action_mode=action_mode
  )
  inputs = {'image': images, 'label': jnp.arange(16) % 10, 'budget': jnp.linspace(0.3, 0.9, 16)}
  actor, critic = networks.Actor(16), networks.Critic(16)
  ppo = learner.PPOConfig(num_minibatches=2)  # 1 point: groups of 2 envs, 2 per device.
  _, sample_obs = env.reset(jax.random.PRNGKey(0), inputs)
  state = jax.jit(
    lambda k: learner.init_learner(k, ppo, actor, critic, sample_obs),
    out_shardings=parallel.replicated_sharding(mesh),
  )(jax.random.PRNGKey(0))
  inputs = jax.device_put(inputs, parallel.batch_sharding(mesh))
  before = jax.device_get(state.actor_params)
  update = jax.jit(learner.make_sharded_update(ppo, env, actor, critic, mesh))
  state, metrics = update(state, inputs, jax.random.PRNGKey(3))
  return jax.device_get((state.actor_params, state.critic_params, metrics)) + (before,)


@pytest.mark.parametrize('action_mode', ['free', 'budget'])
def test_the_data_parallel_update_of_the_pruning_game_matches_one_device(action_mode):
  """Every device shuffles and steps through its own envs; only sums and gradients cross."""
  one = _sharded_pruning_update(parallel.make_mesh(jax.devices()[:1]), action_mode)
  eight = _sharded_pruning_update(parallel.make_mesh(jax.devices()), action_mode)[:3]
  assert one[2]['kept_fraction'] == pytest.approx(eight[2]['kept_fraction'], abs=1e-6)
  # Free: the initial policy keeps about half; budget: floor(16 b) of 16 for b in 0.3..0.9.
  expected = np.mean(np.floor(16 * np.linspace(0.3, 0.9, 16) + 1e-4)) / 16
  if action_mode == 'free':
    assert 0.3 < one[2]['kept_fraction'] < 0.7
  else:
    assert one[2]['kept_fraction'] == pytest.approx(expected, abs=1e-6)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(b, a, atol=1e-5), one[:2], eight[:2]
  )
  diffs = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), one[:2], eight[:2])
  print(f'max abs param difference, 1 vs 8 devices: {max(jax.tree_util.tree_leaves(diffs)):.2g}')
  # The update moved the actor: the comparison is not between two untouched inits.
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), one[0], one[3])
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4


def test_minibatches_are_units_shuffled_within_groups_of_envs():
  """T = 3, E = 4, A = 2, 2 minibatches: groups of 2 envs (6 units each); each minibatch holds 3
  units of group 0 (envs 0-1), then 3 of group 1 (envs 2-3), every unit's agents together."""
  t, e, a = 3, 4, 2
  unit = 10 * jnp.arange(t)[:, None] + jnp.arange(e)[None, :]  # 10 * step + env.
  ids = jnp.broadcast_to(unit[..., None], (t, e, a)).astype(jnp.float32)
  ids = ids + jnp.arange(a) / 10  # Agent j of a unit: + j / 10.
  ones = jnp.ones((t, e, a))
  transitions = learner.Transition(
    obs=ids[..., None],
    global_state=unit[..., None].astype(jnp.float32),
    action=ones.astype(jnp.int32),
    log_prob=ids,
    value=ids,
    reward=ids,
    alive=ones,
    done=ones,
    acting=ones,
    candidates=ones,
  )
  batch = learner._shuffled_minibatches(
    jax.random.PRNGKey(0), transitions, ids, ids, 2, jnp.arange(e), top_k=True
  )
  assert batch.obs.shape == (2, 6, 2, 1) and batch.global_state.shape == (2, 6, 1)
  assert batch.candidates.shape == (2, 6, 2)
  adv = np.asarray(batch.advantage)
  np.testing.assert_allclose(adv[..., 1] - adv[..., 0], 0.1, atol=1e-6)  # Agents together.
  np.testing.assert_allclose(adv[..., 0], np.asarray(batch.global_state[..., 0]))
  envs = adv[..., 0].astype(int) % 10
  assert set(envs[:, :3].ravel()) <= {0, 1} and set(envs[:, 3:].ravel()) <= {2, 3}
  assert sorted(adv[..., 0].astype(int).ravel()) == sorted(np.asarray(unit).ravel())
  free = learner._shuffled_minibatches(
    jax.random.PRNGKey(0), transitions, ids, ids, 2, jnp.arange(e), top_k=False
  )
  assert free.candidates is None
  np.testing.assert_array_equal(free.advantage, batch.advantage)


def test_value_clip_zero_is_a_plain_squared_error():
  """veps = 0: (v, target) = (1, 1), (0.1, 1), (0, 0.5): 0.5 * (0 + 0.81 + 0.25) / 3."""
  batch = learner.Batch(
    obs=jnp.array([[0.0, 1.0], [0.0, 0.1], [0.0, 0.0]]),
    global_state=jnp.zeros((3, 1)),
    action=jnp.array([1, 1, 1], jnp.int32),
    log_prob=jnp.full((3,), np.log(0.5), jnp.float32),
    value=jnp.array([0.0, 0.0, 1.0]),
    advantage=jnp.zeros(3),
    target=jnp.array([1.0, 1.0, 0.5]),
    alive=jnp.ones(3),
    acting=jnp.ones(3),
  )
  coefs = dict(_COEFS, value_clip_eps=0.0)
  _, aux = learner.ppo_loss({}, {}, batch, _FixedActor(), _FixedCritic(), **coefs)
  assert float(aux['value_loss']) == pytest.approx(0.5 * (0.81 + 0.25) / 3, abs=1e-6)


def test_agents_that_stop_deciding_still_learn_values_but_not_policy():
  """A pruned token stays in the episode (alive) without deciding (acting 0): value loss yes,
  policy loss no."""
  batch = learner.Batch(
    obs=jnp.array([[0.0, 1.0], [0.0, 0.0]]),
    global_state=jnp.zeros((2, 1)),
    action=jnp.array([1, 1], jnp.int32),
    log_prob=jnp.full((2,), np.log(0.5), jnp.float32),
    value=jnp.zeros(2),
    advantage=jnp.array([1.0, 50.0]),
    target=jnp.array([1.0, 3.0]),
    alive=jnp.array([1.0, 1.0]),
    acting=jnp.array([1.0, 0.0]),
  )
  _, aux = learner.ppo_loss({}, {}, batch, _FixedActor(), _FixedCritic(), **_COEFS)
  # Only the deciding sample (ratio 1).
  assert float(aux['policy_loss']) == pytest.approx(-1.0, abs=1e-6)
  # Value: sample 0 -> 0.5*max(0, (0.2-1)^2)... V=1 (obs[1]) clipped to 0.2: max(0, 0.64) = 0.64;
  # sample 1 -> V=0, target 3: 9. Mean of halves = 0.5 * (0.64 + 9) / 2.
  assert float(aux['value_loss']) == pytest.approx(0.5 * (0.64 + 9.0) / 2, abs=1e-6)


def test_gae_carries_a_final_reward_back_through_steps_without_decisions():
  """Alive but not deciding after step 0, reward 1 at the last step: the decision at step 0 gets
  the credit."""
  reward = jnp.array([[[0.0]], [[0.0]], [[1.0]]])
  value = jnp.zeros((3, 1, 1))
  done = jnp.array([[[0.0]], [[0.0]], [[1.0]]])
  alive = jnp.ones((3, 1, 1))
  adv, _ = learner.compute_gae(reward, value, done, alive, gamma=1.0, lam=1.0)
  np.testing.assert_allclose(adv[:, 0, 0], [1.0, 1.0, 1.0])


def test_plackett_luce_terms_hand_example():
  """Candidates 0-2 with weights 1, 2, 3 (logits their logs); agent 3 is not a candidate. Draw
  agent 2 first (3/6), then agent 0 (1 of the remaining 1 + 2): P = 1/2 * 1/3."""
  logits = jnp.log(jnp.array([1.0, 2.0, 3.0, 100.0]))
  rank = jnp.array([2, 0, 1, 0])
  candidates = jnp.array([1.0, 1.0, 1.0, 0.0])
  terms = learner.plackett_luce_terms(logits, rank, candidates)
  np.testing.assert_allclose(terms, [math.log(1 / 3), 0.0, math.log(1 / 2), 0.0], rtol=1e-6)


def test_plackett_luce_probabilities_of_every_ordered_draw_sum_to_one():
  """All 4 * 3 = 12 ordered draws of 2 among 4 candidates (a fifth agent is not one)."""
  logits = jnp.array([0.3, -1.2, 2.0, 0.5, 4.0])
  candidates = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])
  total = 0.0
  for first in range(4):
    for second in range(4):
      if first != second:
        rank = jnp.zeros(5, jnp.int32).at[first].set(1).at[second].set(2)
        total += math.exp(float(jnp.sum(learner.plackett_luce_terms(logits, rank, candidates))))
  assert total == pytest.approx(1.0, abs=1e-5)


def test_gumbel_top_k_draws_k_candidates_with_plackett_luce_frequencies():
  """First draws follow softmax(logits) over the candidates; exactly k are drawn, never a
  non-candidate; the entropy is that of the first draw."""
  logits = jnp.array([0.0, 1.0, 2.0, 5.0])
  candidates = jnp.array([1.0, 1.0, 1.0, 0.0])
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  ranks = jax.vmap(lambda key: learner.sample_top_k(key, logits, candidates, 2))(keys)
  assert bool(jnp.all(jnp.sum(ranks > 0, -1) == 2)) and bool(jnp.all(ranks[:, 3] == 0))
  first = np.bincount(np.argmax(np.asarray(ranks) == 1, axis=-1), minlength=4) / 20000
  p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
  np.testing.assert_allclose(first[:3], p, atol=0.01)
  entropy = float(learner.first_draw_entropy(logits, candidates))
  assert entropy == pytest.approx(float(-np.sum(p * np.log(p))), abs=1e-6)


def test_top_k_policy_loss_at_ratio_one_is_the_joint_policy_gradient():
  """One unit, advantage 2 for both kept agents: d(policy loss)/d(logits) = -2/2 * d log P(order).
  Zero entropy and value weights isolate the policy term."""
  logits = jnp.array([0.5, -0.3, 1.2, 0.1])
  rank = jnp.array([0, 2, 1, 0], jnp.int32)
  candidates = jnp.ones(4)

  class Logits(nn.Module):
    @nn.compact
    def __call__(self, obs):
      return obs[..., 0] + self.param('shift', nn.initializers.zeros, (4,))

  terms = learner.plackett_luce_terms(logits, rank, candidates)
  batch = learner.Batch(
    obs=logits[None, :, None],
    global_state=jnp.zeros((1, 1)),
    action=rank[None],
    log_prob=terms[None],
    value=jnp.zeros((1, 4)),
    advantage=jnp.full((1, 4), 2.0),
    target=jnp.zeros((1, 4)),
    alive=jnp.ones((1, 4)),
    acting=(rank > 0).astype(jnp.float32)[None],
    candidates=candidates[None],
  )
  coefs = dict(clip_eps=0.2, value_clip_eps=0.0, value_coef=0.0, entropy_coef=0.0)
  grad = jax.grad(lambda p: learner.ppo_loss(p, {}, batch, Logits(), _FixedCritic(), **coefs)[0])(
    {'params': {'shift': jnp.zeros(4)}}
  )['params']['shift']
  joint = jax.grad(lambda s: jnp.sum(learner.plackett_luce_terms(s, rank, candidates)))(logits)
  np.testing.assert_allclose(grad, -joint, rtol=1e-5, atol=1e-6)


def test_top_k_agents_learn_a_shared_team_reward():
  """8 agents keep 3 jointly, rewarded together with the share of 1-bits kept: random earns 0.5,
  the best choice 0.9388; after 60 updates the greedy choice (top-3 logits) is near it."""
  ppo = learner.PPOConfig(actor_lr=3e-3, entropy_coef=0.0)
  env = toy_env.make_team_env(8, 4, 3)
  actor, critic = networks.Actor(32), networks.Critic(32)
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(0), 32, 8, 4)
  _, sample_obs = env.reset(jax.random.PRNGKey(1), inputs)
  state = learner.init_learner(jax.random.PRNGKey(2), ppo, actor, critic, sample_obs)
  update = jax.jit(learner.make_update(ppo, env, actor, critic), donate_argnums=0)
  key = jax.random.PRNGKey(3)
  returns = []
  for _ in range(60):
    key, inputs_key, update_key = jax.random.split(key, 3)
    state, metrics = update(state, toy_env.make_toy_inputs(inputs_key, 32, 8, 4), update_key)
    returns.append(float(metrics['episode_return']) / 8)
  assert np.mean(returns[:3]) < 0.65  # It starts near random.
  _, obs = env.reset(jax.random.PRNGKey(4), toy_env.make_toy_inputs(key, 2048, 8, 4))
  greedy = jax.lax.top_k(actor.apply(state.actor_params, obs.obs), 3)[1]
  bits = jnp.take_along_axis((obs.obs[..., 0] > 0).astype(jnp.float32), greedy, axis=-1)
  optimum = toy_env.optimal_team_return(8, 3)
  # P(#ones >= 3) = 219/256 pays 1; 28/256 pay 2/3, 8/256 pay 1/3, 1/256 pays 0.
  assert optimum == pytest.approx((219 + 28 * 2 / 3 + 8 / 3) / 256, abs=1e-9)
  assert float(jnp.mean(jnp.sum(bits, -1) / 3)) >= optimum - 0.02


def test_leave_one_out_advantages_by_hand():
  """One step, 2 inputs x K = 3 plays, 1 agent: returns 1, 2, 6 and 0, 0, 3; each minus the mean
  of the input's other two plays: 1 - 4, 2 - 3.5, 6 - 1.5 and 0 - 1.5, 0 - 1.5, 3 - 0. A dead slot
  gets 0."""
  reward = jnp.array([1.0, 2.0, 6.0, 0.0, 0.0, 3.0]).reshape(1, 6, 1)
  alive = jnp.ones((1, 6, 1)).at[0, 4, 0].set(0.0)
  advantages = learner.leave_one_out_advantages(reward, jnp.ones_like(reward), alive, 0.9, 3)
  np.testing.assert_allclose(advantages[0, :, 0], [-3.0, -1.5, 4.5, -1.5, 0.0, 3.0])


def test_several_plays_per_input_learn_the_team_game():
  """K = 4 plays of 8 inputs per update with leave-one-out advantages: the same team game as
  above is learned to within 0.03 of its optimum."""
  ppo = learner.PPOConfig(actor_lr=3e-3, entropy_coef=0.0, rollouts_per_input=4)
  env = toy_env.make_team_env(8, 4, 3)
  actor, critic = networks.Actor(32), networks.Critic(32)
  _, sample_obs = env.reset(
    jax.random.PRNGKey(1), toy_env.make_toy_inputs(jax.random.PRNGKey(0), 8, 8, 4)
  )
  state = learner.init_learner(jax.random.PRNGKey(2), ppo, actor, critic, sample_obs)
  update = jax.jit(learner.make_update(ppo, env, actor, critic), donate_argnums=0)
  key = jax.random.PRNGKey(3)
  for _ in range(60):
    key, inputs_key, update_key = jax.random.split(key, 3)
    state, metrics = update(state, toy_env.make_toy_inputs(inputs_key, 8, 8, 4), update_key)
  _, obs = env.reset(jax.random.PRNGKey(4), toy_env.make_toy_inputs(key, 2048, 8, 4))
  greedy = jax.lax.top_k(actor.apply(state.actor_params, obs.obs), 3)[1]
  bits = jnp.take_along_axis((obs.obs[..., 0] > 0).astype(jnp.float32), greedy, axis=-1)
  assert float(jnp.mean(jnp.sum(bits, -1) / 3)) >= toy_env.optimal_team_return(8, 3) - 0.03


def test_lagrange_step_ascends_the_dual_and_stays_non_negative():
  # Over target by 0.1: the multiplier grows by lr * 0.1; under: it shrinks, but not below 0.
  assert learner.lagrange_step(0.03, cost=0.7, target=0.6, lr=0.05) == pytest.approx(0.035)
  assert learner.lagrange_step(0.03, cost=0.5, target=0.6, lr=0.05) == pytest.approx(0.025)
  assert learner.lagrange_step(0.001, cost=0.5, target=0.6, lr=0.05) == 0.0
