"""The token-pruning Markov game and the two-agent game, run through the ViT's stage methods."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax.models import vit
from vitprune_jax.rl import pruning_env, two_agent_env

# 16 patches + CLS; pruning points after blocks 0 and 1.
CFG = vit.ViTConfig(
  num_classes=10,
  image_size=8,
  patch_size=2,
  hidden_size=16,
  num_layers=3,
  num_heads=2,
  mlp_dim=32,
  num_channels=1,
)


@pytest.fixture(scope='module')
def setup():
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  head = dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (16, 10)), bias=jnp.zeros(10))
  params = dict(params, head=head)
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
  env = pruning_env.make_env(model, params, accuracy_weight=1.0, efficiency_weight=0.5)
  assert env.num_steps == 2
  keep_all = jnp.ones((4, CFG.num_tokens), jnp.int32)
  state, obs, rewards, done = _play(env, inputs, [keep_all, keep_all])
  assert obs[0].obs.shape == (4, 17, pruning_env.num_features(CFG))
  np.testing.assert_array_equal(obs[0].alive[:, 0], 0.0)  # CLS is not an agent.
  np.testing.assert_allclose(rewards[0], 0.0)
  np.testing.assert_allclose(rewards[1], 0.0, atol=1e-5)  # Same prediction: no accuracy change.
  np.testing.assert_array_equal(done, 1.0)
  logits, _ = model.apply({'params': params}, inputs['image'])
  # The env's stages compose to the model's forward pass.
  log_probs = jax.nn.log_softmax(logits)[jnp.arange(4), inputs['label']]
  np.testing.assert_allclose(state.ref_log_prob, log_probs, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(
    env.metrics(state)['accuracy'], np.mean(np.argmax(logits, -1) == np.asarray(inputs['label']))
  )


def test_rewards_and_who_still_decides(setup):
  model, params, inputs = setup
  env = pruning_env.make_env(model, params, accuracy_weight=2.0, efficiency_weight=0.5)
  # Slot 0 (CLS) is ignored.
  prune_half = jnp.ones((4, 17), jnp.int32).at[:, 9:].set(0).at[:, 0].set(0)
  keep_all = jnp.ones((4, 17), jnp.int32)
  state, obs, rewards, _ = _play(env, inputs, [prune_half, keep_all])
  # Step 0 prunes tokens 9..16 after block 0: each earns efficiency_weight * (L - 1 - 0) / L
  # = 0.5 * 2/3.
  np.testing.assert_allclose(rewards[0][:, 9:], 0.5 * 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(rewards[0][:, :9], 0.0)
  # They stay in the episode (alive) but no longer decide; CLS stays kept.
  np.testing.assert_array_equal(obs[1].alive[:, 1:], 1.0)
  np.testing.assert_array_equal(obs[1].acting[:, 9:], 0.0)
  np.testing.assert_array_equal(state.keep[:, 0], 1.0)
  # The final reward is the same for every token agent of an image:
  # accuracy_weight * max(dlogp, -5).
  final = np.asarray(rewards[1])
  np.testing.assert_allclose(final[:, 1:], final[:, 1:2] * np.ones((1, 16)), rtol=1e-6)
  assert np.all(final[:, 1:] >= -2.0 * 5.0 - 1e-6)
  assert float(env.metrics(state)['kept_fraction']) == pytest.approx(0.5)


def test_per_image_efficiency_weights_and_the_kept_compute(setup):
  """inputs['efficiency_weight'] (a constrained run's multiplier) replaces w_e image by image."""
  model, params, inputs = setup
  env = pruning_env.make_env(model, params, accuracy_weight=1.0, efficiency_weight=0.5)
  weights = jnp.array([0.0, 0.1, 0.2, 0.4])
  prune_4 = jnp.ones((4, 17), jnp.int32).at[:, 13:].set(0)  # Patches 13..16 after block 0.
  prune_4_more = jnp.ones((4, 17), jnp.int32).at[:, 9:13].set(0)  # 9..12 after block 1.
  state, _, rewards, _ = _play(
    env, dict(inputs, efficiency_weight=weights), [prune_4, prune_4_more]
  )
  np.testing.assert_allclose(rewards[0][:, 13:], weights[:, None] * 2 / 3 * np.ones((1, 4)))
  np.testing.assert_allclose(rewards[0][:, :13], 0.0)
  # Kept compute: 4 patches saved 2/3 of the blocks, 4 saved 1/3, 8 saved nothing: 1 - 4/16.
  assert float(env.metrics(state)['kept_compute']) == pytest.approx(1 - (4 * 2 / 3 + 4 / 3) / 16)
  # Budget mode ignores them: a budget fixes the compute, there is no efficiency reward.
  budget_env = pruning_env.make_env(
    model, params, accuracy_weight=1.0, efficiency_weight=0.5, action_mode='budget'
  )
  state, _ = budget_env.reset(
    jax.random.PRNGKey(0), dict(inputs, efficiency_weight=weights, budget=jnp.full((4,), 0.5))
  )
  np.testing.assert_array_equal(state.efficiency_weight, 0.0)


def test_the_accuracy_reward_is_the_change_in_log_p_of_the_true_label(setup):
  """Recomputed apart from the env: the ViT run with the same tokens dropped after block 0."""
  model, params, inputs = setup
  env = pruning_env.make_env(model, params, accuracy_weight=2.0, efficiency_weight=0.0)
  pattern = jnp.ones((4, 17)).at[:, 5:].set(0.0)  # Keep CLS and patches 1-4 after block 0.
  state, _, rewards, _ = _play(env, inputs, [pattern.astype(jnp.int32), jnp.ones((4, 17), int)])

  def drop_after_block_0(layer, x, keep_mask, stats):
    return x, keep_mask * pattern if layer == 0 else keep_mask

  pruned, _ = model.apply({'params': params}, inputs['image'], token_selector=drop_after_block_0)
  full, _ = model.apply({'params': params}, inputs['image'])
  rows = jnp.arange(4)
  log_p = lambda logits: jax.nn.log_softmax(logits)[rows, inputs['label']]
  expected = 2.0 * np.maximum(log_p(pruned) - log_p(full), -5.0)
  np.testing.assert_allclose(rewards[1][:, 1], expected, rtol=1e-5, atol=1e-5)
  assert np.any(np.abs(expected) > 1e-3)  # Dropping 12 of 16 patches changes the prediction.
  np.testing.assert_allclose(rewards[0], 0.0)  # No efficiency weight, no reward before the end.


def test_pruning_points_are_checked(setup):
  model, params, _ = setup
  assert (
    pruning_env.make_env(
      model, params, accuracy_weight=1.0, efficiency_weight=0.5, points=(1,)
    ).num_steps
    == 1
  )
  for points in [(2,), (1, 0), (0, 0)]:  # After the last block; decreasing; repeated.
    with pytest.raises(ValueError, match='pruning points'):
      pruning_env.make_env(model, params, accuracy_weight=1.0, efficiency_weight=0.5, points=points)


def test_two_agent_votes_and_reward(setup):
  model, params, inputs = setup
  keep = jnp.ones((5,))
  votes = jnp.array([0, 1, 0, 0, 1, 0, 0, 1, 0, 0])  # attention votes | similarity votes
  np.testing.assert_array_equal(two_agent_env.combine_votes(votes, keep), [1, 1, 1, 0, 1])
  env = two_agent_env.make_env(
    model, params, point=0, accuracy_weight=1.0, target_prune_ratio=0.5, ratio_penalty=2.0
  )
  state, obs = env.reset(jax.random.PRNGKey(0), inputs)
  assert obs.obs.shape == (4, 34, two_agent_env.NUM_FEATURES)
  np.testing.assert_array_equal(obs.alive[:, [0, 17]], 0.0)
  keep_all = jnp.ones((4, 34), jnp.int32)
  state, _, reward, done = env.step(jax.random.PRNGKey(0), state, keep_all)
  # Nothing pruned: accuracy unchanged, |0 - 0.5| * 2 = 1 penalty for every vote.
  np.testing.assert_allclose(reward[:, 1:17], -1.0, atol=1e-5)
  np.testing.assert_array_equal(done, 1.0)
  with pytest.raises(ValueError, match='two-agent point'):
    two_agent_env.make_env(
      model, params, point=2, accuracy_weight=1.0, target_prune_ratio=0.5, ratio_penalty=2.0
    )


def test_two_agent_target_capacities():
  """Target 0.5 of 16 patches: CLS + 8 kept from block `point` on; 0.3 keeps ceil(11.2) = 12."""
  assert two_agent_env.target_capacities(CFG, 0, 0.5) == (9, 9, 9)
  assert two_agent_env.target_capacities(CFG, 1, 0.5) == (17, 9, 9)
  assert two_agent_env.target_capacities(CFG, 1, 0.3) == (17, 13, 13)


def _count_dots(jaxpr) -> int:
  """dot_general equations in a (closed) jaxpr, through every sub-jaxpr (pjit, cond branches...)."""
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == 'dot_general'
    for sub in jax.core.jaxprs_in_params(eqn.params):
      count += _count_dots(sub)
  return count


def test_each_step_runs_only_its_own_segment(setup):
  """6 blocks, points after blocks 0 and 3: step 0 runs blocks 1-3, step 1 blocks 4-5 and the head.

  A block holds 8 matmuls (q, k, v, scores, weighted sum, out, two MLP layers); each observation
  adds 1 (the redundancy feature's cosine similarities); the head 1. A vmapped per-image switch
  would hold every segment in every step (2 x 8 x 5 + ...).
  """
  _, _, inputs = setup
  cfg6 = CFG.__class__(**{**CFG.__dict__, 'num_layers': 6})
  model = vit.VisionTransformer(cfg6)
  params = model.init(jax.random.PRNGKey(0), inputs['image'])['params']
  env = pruning_env.make_env(
    model, params, accuracy_weight=1.0, efficiency_weight=0.1, points=(0, 3)
  )
  state, _ = env.reset(jax.random.PRNGKey(0), inputs)
  actions = jnp.ones((4, cfg6.num_tokens), jnp.int32)
  counts = [
    _count_dots(jax.make_jaxpr(env.step_at(t))(jax.random.PRNGKey(0), state, actions).jaxpr)
    for t in range(2)
  ]
  assert counts == [3 * 8 + 1, 2 * 8 + 1 + 1]
  # The generic step (dynamic point) gives the same numbers as the unrolled ones.
  state1, obs1, reward1, _ = env.step_at(0)(jax.random.PRNGKey(0), state, actions)
  state2, obs2, reward2, _ = jax.jit(env.step)(jax.random.PRNGKey(0), state, actions)
  np.testing.assert_allclose(obs2.obs, obs1.obs, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(state2.t, state1.t)


def test_budget_counts_by_hand():
  """49 patches, b = 0.7: floor(49 * 0.7^(t+1)) = 34, 24, 16, 11, 8 (34.3, 24.01, 16.807, 11.76,
  8.24). cls_attention with r_max = 0.6, alpha = 2 is seed 002's schedule read at the points: 49
  patches through 6 blocks leave 48, 44, 37, 27, 15, 6 (pruning.schedules.tokens_per_layer)."""
  cfg = CFG.__class__(**{**CFG.__dict__, 'image_size': 28, 'patch_size': 4, 'num_layers': 6})
  assert cfg.num_patches == 49
  points = (0, 1, 2, 3, 4)
  geometric = pruning_env.budget_counts(cfg, points, 'geometric', 0.7)
  np.testing.assert_array_equal(geometric, [34, 24, 16, 11, 8])
  cls = pruning_env.budget_counts(cfg, (1, 3, 4), 'cls_attention', 0.6, alpha=2.0)
  np.testing.assert_array_equal(cls, [44, 27, 15])
  np.testing.assert_array_equal(pruning_env.budget_counts(cfg, points, 'geometric', 1.0), [49] * 5)
  # A traced per-image budget gives the same counts.
  traced = jax.jit(jax.vmap(lambda b: pruning_env.budget_counts(cfg, points, 'geometric', b)))
  np.testing.assert_array_equal(traced(jnp.array([0.7, 1.0]))[0], geometric)
  with pytest.raises(ValueError, match=r'must be in \(0, 1\]'):
    pruning_env.check_budget('geometric', 0.0)


def test_budget_mode_keeps_exactly_k_and_shows_the_targets(setup):
  """16 patches, points after blocks 0 and 1, budgets 0.5 and 0.75 per image: keep 8 then 4, and
  12 then 9; the agents see k_t / 16 and k_(t+1) / 16, and `choose` is k_t."""
  model, params, inputs = setup
  env = pruning_env.make_env(
    model, params, accuracy_weight=1.0, efficiency_weight=0.5, action_mode='budget'
  )
  inputs = dict(inputs, budget=jnp.array([0.5, 0.75, 0.5, 0.75]))
  state, obs = env.reset(jax.random.PRNGKey(0), inputs)
  assert obs.obs.shape[-1] == pruning_env.num_features(CFG, 'budget') == CFG.hidden_size + 8
  np.testing.assert_array_equal(obs.choose, [8, 12, 8, 12])
  np.testing.assert_allclose(obs.obs[:, 1, -2:], [[0.5, 0.25], [0.75, 9 / 16]] * 2)
  np.testing.assert_allclose(obs.global_state[:, -2:], [[0.5, 0.25], [0.75, 9 / 16]] * 2)
  kept = []
  for _ in range(env.num_steps):  # Ranks of the first `choose` deciding tokens.
    order = jnp.cumsum(obs.acting, axis=-1) * obs.acting
    ranks = jnp.where(order <= obs.choose[:, None], order, 0).astype(jnp.int32)
    state, obs, reward, _ = env.step(jax.random.PRNGKey(0), state, ranks)
    kept.append(np.asarray(jnp.sum(state.keep[:, 1:], -1)))
  np.testing.assert_array_equal(kept, [[8, 12, 8, 12], [4, 9, 4, 9]])
  # No efficiency reward in budget mode: the last step's reward is the shared accuracy term only.
  np.testing.assert_allclose(reward[:, 1:], jnp.broadcast_to(reward[:, 1:2], reward[:, 1:].shape))
  with pytest.raises(ValueError, match="inputs\\['budget'\\]"):
    env.reset(jax.random.PRNGKey(0), {'image': inputs['image'], 'label': inputs['label']})
