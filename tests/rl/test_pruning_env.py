"""The token-pruning Markov game, the two-agent game, and policies replayed as pruners."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.models import vit
from vitprune_jax.rl import networks, policy_pruner, pruning_env, two_agent_env

CFG = vit.ViTConfig(num_classes=10, image_size=8, patch_size=2, hidden_size=16, num_layers=3, num_heads=2,
                    mlp_dim=32, num_channels=1)  # 16 patches + CLS; pruning points after blocks 0 and 1.


@pytest.fixture(scope='module')
def setup():
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  params = dict(params, head=dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (16, 10)), bias=jnp.zeros(10)))
  inputs = {'image': images, 'label': jnp.array([0, 1, 2, 3])}
  return model, params, inputs


def _play(env, inputs, actions_per_step):
  state, obs = env.reset(jax.random.PRNGKey(0), inputs)
  out = [obs]
  rewards = []
  for actions in actions_per_step:
    state, obs, reward, done = env.step(jax.random.PRNGKey(0), state, actions)
    out.append(obs)
    rewards.append(reward)
  return state, out, rewards, done


def test_keeping_everything_is_the_unpruned_model(setup):
  model, params, inputs = setup
  env = pruning_env.make_env(CFG, params, alpha=1.0, beta=0.5)
  assert env.num_steps == 2
  keep_all = jnp.ones((4, CFG.num_tokens), jnp.int32)
  state, obs, rewards, done = _play(env, inputs, [keep_all, keep_all])
  assert obs[0].obs.shape == (4, 17, pruning_env.num_features(CFG))
  np.testing.assert_array_equal(obs[0].alive[:, 0], 0.0)  # CLS is not an agent.
  np.testing.assert_allclose(rewards[0], 0.0)
  np.testing.assert_allclose(rewards[1], 0.0, atol=1e-5)  # Same prediction: no accuracy change.
  np.testing.assert_array_equal(done, 1.0)
  logits, _ = model.apply({'params': params}, inputs['image'])
  np.testing.assert_array_equal(env.metrics(state)['accuracy'],
                                np.mean(np.argmax(logits, -1) == np.asarray(inputs['label'])))


def test_rewards_and_who_still_decides(setup):
  _, params, inputs = setup
  env = pruning_env.make_env(CFG, params, alpha=2.0, beta=0.5)
  prune_half = jnp.ones((4, 17), jnp.int32).at[:, 9:].set(0).at[:, 0].set(0)  # Slot 0 (CLS) is ignored.
  keep_all = jnp.ones((4, 17), jnp.int32)
  state, obs, rewards, _ = _play(env, inputs, [prune_half, keep_all])
  # Step 0 prunes tokens 9..16 after block 0: each earns beta * (L - 1 - 0) / L = 0.5 * 2/3.
  np.testing.assert_allclose(rewards[0][:, 9:], 0.5 * 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(rewards[0][:, :9], 0.0)
  # They stay in the episode (alive) but no longer decide; CLS stays kept.
  np.testing.assert_array_equal(obs[1].alive[:, 1:], 1.0)
  np.testing.assert_array_equal(obs[1].acting[:, 9:], 0.0)
  np.testing.assert_array_equal(state.keep[:, 0], 1.0)
  # The final reward is the same for every token agent of an image: alpha * max(dlogp, -5).
  final = np.asarray(rewards[1])
  np.testing.assert_allclose(final[:, 1:], final[:, 1:2] * np.ones((1, 16)), rtol=1e-6)
  assert np.all(final[:, 1:] >= -2.0 * 5.0 - 1e-6)
  assert float(env.metrics(state)['kept_fraction']) == pytest.approx(0.5)


def test_policy_pruner_replays_the_env_decisions(setup):
  """A greedy policy run as a mask-mode pruner keeps exactly what it keeps in the env."""
  model, params, inputs = setup
  env = pruning_env.make_env(CFG, params, alpha=1.0, beta=0.5)
  actor = networks.Actor(8)
  state, obs = env.reset(jax.random.PRNGKey(0), inputs)
  actor_params = actor.init(jax.random.PRNGKey(3), obs.obs)
  # Bias the output so that about half the tokens are kept.
  actor_params = jax.tree_util.tree_map(lambda x: x * 300.0, actor_params)
  for _ in range(env.num_steps):
    actions = (actor.apply(actor_params, obs.obs) >= 0).astype(jnp.int32)
    state, obs, _, _ = env.step(jax.random.PRNGKey(0), state, actions)
  meta = {'kind': 'mappo', 'points': [0, 1]}
  pruner = policy_pruner.make_policy_pruner('mappo', 'mappo', CFG, actor, actor_params, meta,
                                            policy_pruner.uncapped(CFG))
  _, aux = model.apply({'params': params}, inputs['image'], token_selector=pruning.make_selector(pruner,
                                                                                                 mode='mask'))
  np.testing.assert_array_equal(aux.keep_mask, state.keep)
  assert 0 < float(jnp.mean(state.keep)) < 1


def test_bucket_capacities():
  counts = np.array([[17, 9, 5], [13, 7, 3], [15, 11, 2], [16, 8, 4]])
  assert policy_pruner.bucket_capacities(counts, 17, 1.0, 4) == (17, 12, 8)
  assert policy_pruner.bucket_capacities(counts, 17, 0.5, 4) == (16, 12, 4)
  assert policy_pruner.bucket_capacities(np.zeros((2, 2)), 17, 1.0, 4) == (2, 2)


def test_two_agent_votes_and_reward(setup):
  model, params, inputs = setup
  keep = jnp.ones((5,))
  votes = jnp.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 0])  # attention votes | similarity votes
  np.testing.assert_array_equal(two_agent_env.combine_votes(votes, keep), [1, 1, 1, 0, 1])
  env = two_agent_env.make_env(CFG, params, point=0, alpha=1.0, target_prune_ratio=0.5, ratio_penalty=2.0)
  state, obs = env.reset(jax.random.PRNGKey(0), inputs)
  assert obs.obs.shape == (4, 34, two_agent_env.NUM_FEATURES)
  np.testing.assert_array_equal(obs.alive[:, [0, 17]], 0.0)
  keep_all = jnp.ones((4, 34), jnp.int32)
  state, _, reward, done = env.step(jax.random.PRNGKey(0), state, keep_all)
  # Nothing pruned: accuracy unchanged, |0 - 0.5| * 2 = 1 penalty for every vote.
  np.testing.assert_allclose(reward[:, 1:17], -1.0, atol=1e-5)
  np.testing.assert_array_equal(done, 1.0)
