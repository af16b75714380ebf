"""Policies: specs and their saved meta, the registry, policies as pruners, and loading."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vitprune_jax import checkpoints, parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit
from vitprune_jax.rl import learner, policies, pruning_env

# 16 patches + CLS, 3 blocks: mappo's default points are after blocks 0 and 1.
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

# Metas as the earlier train_policy wrote them (format 1).
OLD_MAPPO_META = {
  'kind': 'mappo',
  'points': [0, 1],
  'hidden_size': 8,
  'vit_checkpoint': '/runs/vit/best',
  'alpha': 1.5,
  'beta': 0.05,
}
OLD_TWO_AGENT_META = {
  'kind': 'two_agent',
  'point': 1,
  'target_prune_ratio': 0.4,
  'hidden_size': 64,
  'vit_checkpoint': '/runs/vit/best',
  'alpha': 2.0,
  'beta': 0.03,
}


@pytest.fixture(scope='module')
def setup():
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  head = dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (16, 10)), bias=jnp.zeros(10))
  params = dict(params, head=head)
  inputs = {'image': images, 'label': jnp.array([0, 1, 2, 3])}
  return model, params, inputs


def test_old_meta_to_spec_to_new_meta_and_back():
  mappo = policies.PolicySpec.from_meta(OLD_MAPPO_META)
  assert mappo == policies.PolicySpec(
    'mappo',
    hidden_size=8,
    points=(0, 1),
    accuracy_weight=1.5,
    efficiency_weight=0.05,
    accuracy_clip=5.0,
    target_prune_ratio=0.5,
    ratio_penalty=2.0,
    vit_checkpoint='/runs/vit/best',
  )
  two_agent = policies.PolicySpec.from_meta(OLD_TWO_AGENT_META)
  assert two_agent == policies.PolicySpec(
    'two_agent',
    hidden_size=64,
    points=(1,),
    accuracy_weight=2.0,
    efficiency_weight=0.03,
    accuracy_clip=5.0,
    target_prune_ratio=0.4,
    ratio_penalty=2.0,
    vit_checkpoint='/runs/vit/best',
  )
  for spec in (mappo, two_agent):
    meta = json.loads(json.dumps(spec.to_meta()))  # What the checkpoint's JSON item holds.
    assert meta['format'] == policies.META_FORMAT and 'alpha' not in meta
    assert policies.PolicySpec.from_meta(meta) == spec
  assert mappo.to_meta()['efficiency_weight'] == 0.05 and mappo.to_meta()['points'] == [0, 1]


def test_make_spec_resolves_and_checks():
  assert policies.make_spec('mappo', CFG).points == (0, 1)  # Every block but the last.
  assert policies.make_spec('mappo', CFG, points=[1]).points == (1,)
  assert policies.make_spec('two_agent', CFG).points == (0,)
  spec = policies.make_spec('two_agent', CFG, points=(1,), hidden_size=8, ratio_penalty=3.0)
  assert (spec.points, spec.hidden_size, spec.ratio_penalty) == ((1,), 8, 3.0)
  with pytest.raises(UserError, match='Unknown policy'):
    policies.make_spec('genetic', CFG)
  with pytest.raises(UserError, match='pruning points'):
    policies.make_spec('mappo', CFG, points=(2,))
  with pytest.raises(UserError, match='exactly one point'):
    policies.make_spec('two_agent', CFG, points=(0, 1))
  with pytest.raises(UserError, match='two-agent point'):
    policies.make_spec('two_agent', CFG, points=(2,))
  with pytest.raises(UserError, match="field 'alpha'"):
    policies.make_spec('mappo', CFG, alpha=1.0)
  with pytest.raises(UserError, match='target_prune_ratio'):
    policies.make_spec('two_agent', CFG, target_prune_ratio=1.5)


def test_same_game_decides_what_may_resume():
  mappo = policies.make_spec('mappo', CFG)
  assert mappo.same_game(mappo._replace(efficiency_weight=0.5, vit_checkpoint='elsewhere'))
  assert mappo.same_game(mappo._replace(target_prune_ratio=0.9))  # Not part of mappo's game.
  assert not mappo.same_game(mappo._replace(points=(1,)))
  assert not mappo.same_game(mappo._replace(hidden_size=8))
  assert not mappo.same_game(policies.make_spec('two_agent', CFG))
  two_agent = policies.make_spec('two_agent', CFG)
  assert not two_agent.same_game(two_agent._replace(target_prune_ratio=0.3))


def test_registry_envs(setup):
  model, params, _ = setup
  for kind, num_steps in [('mappo', 2), ('two_agent', 1)]:
    env = policies.make_env(model, params, policies.make_spec(kind, CFG))
    assert env.num_steps == num_steps
  assert set(policies.POLICIES) == {'mappo', 'two_agent'}


def test_bucket_capacities():
  counts = np.array([[17, 9, 5], [13, 7, 3], [15, 11, 2], [16, 8, 4]])
  assert policies.bucket_capacities(counts, 17, 1.0, 4) == (17, 12, 8)
  assert policies.bucket_capacities(counts, 17, 0.5, 4) == (16, 12, 4)
  assert policies.bucket_capacities(np.zeros((2, 2)), 17, 1.0, 4) == (2, 2)
  with pytest.raises(ValueError, match='quantile'):
    policies.bucket_capacities(counts, 17, 0.0, 4)


def test_mappo_pruner_replays_the_env_decisions(setup):
  """A greedy policy run as a mask-mode pruner keeps exactly what it keeps in the env."""
  model, params, inputs = setup
  spec = policies.make_spec('mappo', CFG, hidden_size=8)
  env = policies.make_env(model, params, spec)
  actor, _ = policies.make_networks(spec)
  state, obs = env.reset(jax.random.PRNGKey(0), inputs)
  actor_params = actor.init(jax.random.PRNGKey(3), obs.obs)
  # Bias the output so that about half the tokens are kept.
  actor_params = jax.tree_util.tree_map(lambda x: x * 300.0, actor_params)
  for _ in range(env.num_steps):
    actions = (actor.apply(actor_params, obs.obs) >= 0).astype(jnp.int32)
    state, obs, _, _ = env.step(jax.random.PRNGKey(0), state, actions)
  pruner = policies.policy_pruner(spec, CFG, actor, actor_params, policies.uncapped(CFG))
  assert (pruner.name, pruner.budget, pruner.threshold) == ('mappo', (17, 17, 17), 0.0)
  selector = pruning.make_selector(pruner, execution='mask')
  _, aux = model.apply({'params': params}, inputs['image'], token_selector=selector)
  np.testing.assert_array_equal(aux.keep_mask, state.keep)
  assert 0 < float(jnp.mean(state.keep)) < 1


class _TypeLogits(nn.Module):
  """Keep logit by agent type: features 4 and 5 of a vote are the one-hot attention / similarity."""

  attention: float
  similarity: float

  def __call__(self, obs):
    return self.attention * obs[..., 4] + self.similarity * obs[..., 5]


def test_two_agent_score_is_the_log_odds_of_surviving_the_vote():
  """P(attention keeps) = 0.75 (logit ln 3), P(similarity keeps) = 0.5 (logit 0): P(pruned) =
  0.25 * 0.5 = 0.125, so the score is ln(0.875 / 0.125) = ln 7; other layers keep everything."""
  spec = policies.make_spec('two_agent', CFG, points=(1,))
  score = policies.two_agent_score_fn(CFG, _TypeLogits(math.log(3.0), 0.0), {}, spec)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 17, 16))
  keep = jnp.ones((2, 17))
  stats = vit.TokenStats(jnp.full((2, 17), 1 / 17), jnp.full((2, 17), 1 / 17))
  np.testing.assert_allclose(score(1, x, keep, stats, None), math.log(7.0), rtol=1e-5)
  assert float(jnp.min(score(0, x, keep, stats, None))) >= 1e9


def test_deployed_pruners(setup):
  model, params, _ = setup
  two_agent = policies.make_spec('two_agent', CFG, points=(1,), target_prune_ratio=0.5)
  mappo = policies.make_spec('mappo', CFG)
  actor = policies.make_networks(mappo)[0]
  # Fixed capacities from the target ratio, filled: nothing to count on validation.
  assert policies.probe_pruner(two_agent, CFG, actor, {}) is None
  deployed = policies.deployed_pruner(two_agent, CFG, actor, {}, quantile=0.9, bucket=4)
  assert (deployed.name, deployed.budget, deployed.threshold) == ('two_agent', (17, 9, 9), None)
  # MAPPO: the probe is uncapped; the capacities are bucketed from its kept counts.
  probe = policies.probe_pruner(mappo, CFG, actor, {})
  assert (probe.budget, probe.threshold) == ((17, 17, 17), 0.0)
  counts = np.array([[17, 9, 5], [13, 7, 3], [15, 11, 2], [16, 8, 4]])
  deployed = policies.deployed_pruner(mappo, CFG, actor, {}, counts, quantile=1.0, bucket=4)
  assert (deployed.name, deployed.budget, deployed.threshold) == ('mappo', (17, 12, 8), 0.0)
  with pytest.raises(ValueError, match='kept counts'):
    policies.deployed_pruner(mappo, CFG, actor, {}, quantile=1.0, bucket=4)


def test_load_policy_restores_a_saved_policy(setup, tmp_path):
  """The checkpoint layout under <workdir>/policy, with the meta the earlier train_policy wrote
  (the new format goes through the same path: see the meta round trip above)."""
  model, params, _ = setup
  spec = policies.PolicySpec.from_meta(OLD_MAPPO_META)
  env = policies.make_env(model, params, spec)
  actor, critic = policies.make_networks(spec)
  mesh = parallel.make_mesh()
  ppo = learner.PPOConfig()
  state = policies.init_learner_state(jax.random.PRNGKey(4), env, actor, critic, ppo, CFG, mesh)
  abstract = policies.abstract_learner(env, actor, critic, ppo, CFG, mesh)
  assert jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), abstract) == jax.tree_util.tree_map(
    lambda x: (x.shape, x.dtype), state
  )
  state = state._replace(step=jnp.asarray(3, jnp.int32))
  ckpt = checkpoints.Checkpointer(str(tmp_path / policies.POLICY_DIR))
  ckpt.save(3, *policies.to_checkpoint(state), OLD_MAPPO_META)
  ckpt.wait()
  nets, opt, _ = ckpt.restore_latest(*policies.to_checkpoint(state))
  ckpt.close()
  resumed = policies.from_checkpoint(nets, opt)
  assert int(resumed.step) == 3

  loaded_actor, actor_params, loaded = policies.load_policy(str(tmp_path), model, params, mesh)
  assert loaded == spec and loaded_actor == actor
  for a, b in zip(
    jax.tree_util.tree_leaves(actor_params), jax.tree_util.tree_leaves(state.actor_params)
  ):
    np.testing.assert_array_equal(a, b)
  obs = pruning_env.observe(
    CFG, jnp.ones((17, 16)), jnp.ones(17), jnp.asarray(0), jnp.ones(17), jnp.ones(17), 2
  ).obs
  np.testing.assert_array_equal(
    loaded_actor.apply(actor_params, obs), actor.apply(state.actor_params, obs)
  )


def test_load_policy_rejects_a_foreign_checkpoint(setup, tmp_path):
  model, params, _ = setup
  ckpt = checkpoints.Checkpointer(str(tmp_path / policies.POLICY_DIR))
  ckpt.save(1, {'actor': {'w': jnp.zeros(2)}}, {'step': jnp.zeros(())}, {'kind': 'genetic'})
  ckpt.wait()
  ckpt.close()
  with pytest.raises(checkpoints.CheckpointError, match='does not hold a policy'):
    policies.load_policy(str(tmp_path), model, params, parallel.make_mesh())


def test_budget_mode_deploys_top_k_of_its_logits_at_the_budget(setup):
  """Budget 0.5 on 16 patches, points after blocks 0 and 1: 1 + 8 then 1 + 4 tokens, filled by
  the actor's logits; in compact mode it keeps exactly the tokens the env's greedy top-k keeps."""
  model, params, inputs = setup
  spec = policies.make_spec('mappo', CFG, hidden_size=8, action_mode='budget')
  assert policies.budget_counts(CFG, spec, 0.5) == (8, 4)
  assert policies.budget_capacities(CFG, spec, 0.5) == (9, 5, 5)
  actor, _ = policies.make_networks(spec)
  env = policies.make_env(model, params, spec)
  state, obs = env.reset(jax.random.PRNGKey(0), dict(inputs, budget=jnp.full((4,), 0.5)))
  actor_params = actor.init(jax.random.PRNGKey(3), obs.obs)
  actor_params = jax.tree_util.tree_map(lambda x: x * 300.0, actor_params)
  for _ in range(env.num_steps):  # Greedy: rank the top-k logits among the deciding tokens.
    logits = jnp.where(obs.acting > 0, actor.apply(actor_params, obs.obs), -jnp.inf)
    position = jnp.argsort(jnp.argsort(-logits, axis=-1), axis=-1)
    ranks = jnp.where(position < obs.choose[:, None], position + 1, 0).astype(jnp.int32)
    state, obs, _, _ = env.step(jax.random.PRNGKey(0), state, ranks)
  assert policies.probe_pruner(spec, CFG, actor, actor_params) is None
  deployed = policies.deployed_pruner(
    spec, CFG, actor, actor_params, quantile=0.9, bucket=4, budget=0.5
  )
  assert (deployed.budget, deployed.threshold) == ((9, 5, 5), None)
  selector = pruning.make_selector(deployed, execution='mask')
  _, aux = model.apply({'params': params}, inputs['image'], token_selector=selector)
  np.testing.assert_array_equal(aux.keep_mask, state.keep)
  with pytest.raises(ValueError, match='budget='):
    policies.deployed_pruner(spec, CFG, actor, actor_params, quantile=0.9, bucket=4)
  with pytest.raises(UserError, match="'two_agent' has no budget mode"):
    policies.make_spec('two_agent', CFG, action_mode='budget')
  with pytest.raises(UserError, match='budget_range'):
    policies.make_spec('mappo', CFG, action_mode='budget', budget_range=(0.9, 0.6))


def test_a_policy_trained_with_merging_deploys_the_game_it_was_trained_in(setup):
  """The drop-merge game (tokens merge in place, mask mode) and the deployed compact drop-merge
  pruner give the same log-probability of the label for the same greedy decisions."""
  model, params, inputs = setup
  spec = policies.make_spec(
    'mappo', CFG, hidden_size=8, action_mode='budget', merge_dropped=True, accuracy_clip=1e9
  )
  actor, _ = policies.make_networks(spec)
  env = policies.make_env(model, params, spec)
  state, obs = env.reset(jax.random.PRNGKey(0), dict(inputs, budget=jnp.full((4,), 0.5)))
  actor_params = actor.init(jax.random.PRNGKey(3), obs.obs)
  actor_params = jax.tree_util.tree_map(lambda x: x * 300.0, actor_params)
  for _ in range(env.num_steps):
    logits = jnp.where(obs.acting > 0, actor.apply(actor_params, obs.obs), -jnp.inf)
    position = jnp.argsort(jnp.argsort(-logits, axis=-1), axis=-1)
    ranks = jnp.where(position < obs.choose[:, None], position + 1, 0).astype(jnp.int32)
    state, obs, reward, _ = env.step(jax.random.PRNGKey(0), state, ranks)
  deployed = policies.deployed_pruner(
    spec, CFG, actor, actor_params, quantile=0.9, bucket=4, budget=0.5
  )
  assert deployed.name == 'mappo+merge' and deployed.merge_kind == 'drop_merge'
  out, kept = pruning.forward(model, params, inputs['image'], deployed)
  assert kept.tolist() == [[9, 5, 5]] * 4
  log_p = jax.nn.log_softmax(out)[jnp.arange(4), inputs['label']]
  np.testing.assert_allclose(reward[:, 1] + state.ref_log_prob, log_p, atol=1e-4)
  # Merging changed the prediction against the dropping game with the same decisions.
  dropped = policies.make_env(model, params, spec._replace(merge_dropped=False))
  state_d, obs_d = dropped.reset(jax.random.PRNGKey(0), dict(inputs, budget=jnp.full((4,), 0.5)))
  for _ in range(dropped.num_steps):
    logits = jnp.where(obs_d.acting > 0, actor.apply(actor_params, obs_d.obs), -jnp.inf)
    position = jnp.argsort(jnp.argsort(-logits, axis=-1), axis=-1)
    ranks = jnp.where(position < obs_d.choose[:, None], position + 1, 0).astype(jnp.int32)
    state_d, obs_d, reward_d, _ = dropped.step(jax.random.PRNGKey(0), state_d, ranks)
  assert not np.allclose(reward_d[:, 1], reward[:, 1], atol=1e-4)
  assert not spec.same_game(spec._replace(merge_dropped=False))
  assert policies.PolicySpec.from_meta(spec.to_meta()) == spec
  with pytest.raises(UserError, match='merge_dropped needs action_mode=budget'):
    policies.make_spec('mappo', CFG, merge_dropped=True)


def test_a_strong_similarity_prior_ranks_as_the_similarity_heuristic(setup):
  model, params, inputs = setup
  spec = policies.make_spec('mappo', CFG, hidden_size=8, action_mode='budget', similarity_prior=1e4)
  actor, _ = policies.make_networks(spec)
  env = policies.make_env(model, params, spec)
  _, obs = env.reset(jax.random.PRNGKey(0), dict(inputs, budget=jnp.full((4,), 0.5)))
  actor_params = actor.init(jax.random.PRNGKey(3), obs.obs)
  plain = policies.make_networks(spec._replace(similarity_prior=0.0))[0]
  redundancy = obs.obs[..., -6]  # Budget mode: 2 target columns after the redundancy.
  np.testing.assert_allclose(
    actor.apply(actor_params, obs.obs),
    plain.apply(actor_params, obs.obs) - 1e4 * redundancy,
    rtol=1e-6,
  )
  # With the MLP's output at 0, the logit is the prior alone: the policy keeps what similarity does.
  actor_params = jax.tree_util.tree_map(jnp.zeros_like, actor_params)
  deployed = policies.deployed_pruner(
    spec, CFG, actor, actor_params, quantile=1.0, bucket=1, budget=0.5
  )
  heuristic = pruning.at_capacities('similarity', CFG, deployed.budget)
  masks = []
  for pruner in (deployed, heuristic):
    selector = pruning.make_selector(pruner, execution='mask')
    masks.append(model.apply({'params': params}, inputs['image'], token_selector=selector)[1])
  np.testing.assert_array_equal(masks[0].keep_mask, masks[1].keep_mask)
  with pytest.raises(UserError, match='no similarity prior'):
    policies.make_spec('two_agent', CFG, similarity_prior=1.0)
