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


def test_minibatches_that_do_not_divide_the_samples_are_padded():
  """T*A = 3*4 = 12 samples per env into 5 minibatches: padded to 15 with dead samples."""
  ppo = learner.PPOConfig(num_minibatches=5)
  env, actor, critic, state = _setup(ppo, num_envs=4, num_agents=4)
  update = jax.jit(learner.make_update(ppo, env, actor, critic))
  inputs = toy_env.make_toy_inputs(jax.random.PRNGKey(0), 4, 4, 4)
  _, metrics = update(state, inputs, jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics['total_loss']))


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


def _sharded_pruning_update(mesh):
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
  env = pruning_env.make_env(model, params, accuracy_weight=1.0, efficiency_weight=0.1)
  inputs = {'image': images, 'label': jnp.arange(16) % 10}
  actor, critic = networks.Actor(16), networks.Critic(16)
  ppo = learner.PPOConfig(num_minibatches=3)  # 17 agents x 1 point: padded to 18 per env.
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


def test_the_data_parallel_update_of_the_pruning_game_matches_one_device():
  """Every device shuffles and steps through its own envs; only sums and gradients cross."""
  one = _sharded_pruning_update(parallel.make_mesh(jax.devices()[:1]))
  eight = _sharded_pruning_update(parallel.make_mesh(jax.devices()))[:3]
  assert one[2]['kept_fraction'] == pytest.approx(eight[2]['kept_fraction'], abs=1e-6)
  assert 0.3 < one[2]['kept_fraction'] < 0.7  # The initial policy keeps about half.
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(b, a, atol=1e-5), one[:2], eight[:2]
  )
  diffs = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), one[:2], eight[:2])
  print(f'max abs param difference, 1 vs 8 devices: {max(jax.tree_util.tree_leaves(diffs)):.2g}')
  # The update moved the actor: the comparison is not between two untouched inits.
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), one[0], one[3])
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-4


def test_padded_minibatches_are_stratified_by_env_and_cover_every_sample():
  """T*A = 5 samples per env, 2 minibatches: padded to 6, each minibatch 3 of every env's."""
  t, e, a = 1, 2, 5
  ids = jnp.arange(t * e * a, dtype=jnp.float32).reshape(t, e, a)
  ones = jnp.ones((t, e, a))
  transitions = learner.Transition(
    obs=ids[..., None],
    global_state=jnp.zeros((t, e, 1)),
    action=ones.astype(jnp.int32),
    log_prob=ids,
    value=ids,
    reward=ids,
    alive=ones,
    done=ones,
    acting=ones,
  )
  batch = learner._shuffled_minibatches(
    jax.random.PRNGKey(0), transitions, ids, ids, 2, jnp.arange(e)
  )
  assert batch.obs.shape == (2, 6, 1)
  for m in range(2):  # 3 slots of env 0 (ids 0-4), then 3 of env 1 (ids 5-9); padding is dead.
    env0, env1 = batch.advantage[m, :3], batch.advantage[m, 3:]
    assert all(v < 5 or not al for v, al in zip(env0, batch.alive[m, :3]))
    assert all(v >= 5 or not al for v, al in zip(env1, batch.alive[m, 3:]))
  real = sorted(float(v) for v, al in zip(batch.advantage.ravel(), batch.alive.ravel()) if al)
  assert real == list(range(10)) and float(batch.alive.sum()) == 10


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
