"""Each pruner: counts follow its budget, CLS is always kept, random is reproducible by key; the
registry builds any of them by name and rejects bad names and options in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit
from vitprune_jax.pruning import flops, pruners

CFG = vit.ViTConfig(
  num_classes=10,
  image_size=16,
  patch_size=2,
  hidden_size=32,
  num_layers=4,
  num_heads=4,
  mlp_dim=64,
  num_channels=1,
)  # 64 patches + CLS.
SCHEDULE = {'r_max': 0.7, 'alpha': 1.0}


OPTIONS = {'none': {}, 'tome': {'r': 6}, 'evit': {'keep_rate': 0.6}}


def build(name: str) -> pruners.Pruner:
  return pruning.make_pruner(name, CFG, **OPTIONS.get(name, SCHEDULE))


@pytest.fixture(scope='module')
def model_params_images():
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  return model, params, images


@pytest.mark.parametrize('name', list(pruning.PRUNERS))
@pytest.mark.parametrize('execution', pruning.EXECUTIONS)
def test_counts_follow_budget_and_cls_is_kept(model_params_images, name, execution):
  model, params, images = model_params_images
  pruner = build(name)
  hooks = pruning.model_hooks(pruner, execution=execution, rng=jax.random.PRNGKey(5))
  _, aux = model.apply({'params': params}, images, **hooks)
  kept = np.stack([np.asarray(k) for k in aux.kept], axis=1)  # (B, L)
  np.testing.assert_array_equal(kept, np.broadcast_to(pruner.budget, kept.shape))
  assert np.all(np.asarray(aux.keep_mask)[:, 0] == 1)  # CLS (slot 0 in both executions).
  if execution == 'compact' or pruner.merger is not None:  # Merging always gathers.
    assert aux.keep_mask.shape == (4, pruner.budget[-1])


def test_schedule_pruners_share_the_schedule():
  # 64 patches, L=4, r_max=0.7, alpha=1: ratios 1-0.7*l/4 for l=1..4 = 0.825, 0.65, 0.475, 0.3;
  # floor(64*0.825)=52, floor(52*0.65)=33, floor(33*0.475)=15, floor(15*0.3)=4; + CLS.
  assert tuple(pruning.tokens_per_layer(64, 4, 0.7, 1.0)) == (53, 34, 16, 5)
  for name in ('random', 'cls_attention', 'mean_attention', 'similarity'):
    pruner = pruning.make_pruner(name, CFG, r_max=0.7, alpha=1.0)
    assert (pruner.name, pruner.budget) == (name, (53, 34, 16, 5))
  none = pruning.make_pruner('none', CFG)
  assert (none.name, none.score_fn, none.budget) == ('none', None, (65,) * 4)


def test_greedy_is_one_shot_within_the_schedule_flops():
  sched = build('cls_attention')
  greedy = build('greedy')
  assert len(set(greedy.budget)) == 1
  assert flops.vit_flops(CFG, greedy.budget) <= flops.vit_flops(CFG, sched.budget)
  one_more = [greedy.budget[0] + 1] * CFG.num_layers
  assert flops.vit_flops(CFG, one_more) > flops.vit_flops(CFG, sched.budget)


def test_at_capacities_runs_each_heuristic_at_the_given_counts():
  caps = (65, 40, 30, 20)
  for name in ('random', 'cls_attention', 'mean_attention', 'similarity'):
    p = pruning.at_capacities(name, CFG, caps)
    assert (p.name, p.budget, p.score_fn) == (name, caps, build(name).score_fn)
  greedy = pruning.at_capacities('greedy', CFG, caps)
  keep = greedy.budget[0]  # One shot after block 0, the largest count within the GFLOPs.
  assert greedy.budget == (keep,) * 4
  assert flops.vit_flops(CFG, greedy.budget) <= flops.vit_flops(CFG, caps)
  assert flops.vit_flops(CFG, (keep + 1,) * 4) > flops.vit_flops(CFG, caps)
  with pytest.raises(UserError, match="No heuristic pruner 'none'"):
    pruning.at_capacities('none', CFG, caps)


def test_random_is_reproducible_by_key(model_params_images):
  model, params, images = model_params_images
  pruner = build('random')
  run = lambda seed: (
    model.apply(
      {'params': params},
      images,
      token_selector=pruning.make_selector(pruner, execution='mask', rng=jax.random.PRNGKey(seed)),
    )[1].keep_mask
  )
  np.testing.assert_array_equal(run(1), run(1))
  assert not np.array_equal(run(1), run(2))


def test_cls_attention_keeps_the_most_attended_tokens():
  stats = vit.TokenStats(
    cls_attention=jnp.array([[0.5, 0.1, 0.3, 0.05, 0.05]]), mean_attention=jnp.zeros((1, 5))
  )
  pruner = pruners.Pruner('cls_attention', pruners.cls_attention_score, (3,))
  selector = pruning.make_selector(pruner, execution='mask')
  _, mask = selector(0, jnp.zeros((1, 5, 2)), jnp.ones((1, 5)), stats)
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0]])


def test_inverse_cls_attention_ranks_the_other_way():
  stats = vit.TokenStats(jnp.array([[0.5, 0.1, 0.3, 0.1]]), jnp.zeros((1, 4)))
  inverse = pruners.inverse_cls_attention_score(0, None, None, stats, None)
  np.testing.assert_allclose(inverse, -stats.cls_attention)


def test_each_pruner_asks_for_exactly_the_statistics_it_reads():
  needs = {name: build(name).statistics for name in pruning.PRUNERS}
  assert needs['none'] == needs['random'] == needs['similarity'] == needs['tome'] == ()
  assert needs['cls_attention'] == needs['greedy'] == needs['evit'] == ('cls_attention',)
  assert needs['mean_attention'] == ('mean_attention',)
  assert needs['cls_value_attention'] == ('cls_value_attention',)
  assert pruning.model_hooks(None, execution='compact') == {'statistics': ()}


def test_similarity_drops_a_duplicate_first():
  x = jnp.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0.01], [0, 0, 1.0]]])
  scores = pruners.similarity_score(0, x, jnp.ones((1, 4)), None, None)
  # Tokens 1 and 2 are near-duplicates: both score lowest; token 3 is unique.
  assert float(scores[0, 3]) > float(scores[0, 1])
  assert float(scores[0, 3]) > float(scores[0, 2])


def test_registry_names_and_options():
  assert list(pruning.PRUNERS) == [
    'none',
    'random',
    'greedy',
    'cls_attention',
    'inverse_cls_attention',
    'cls_value_attention',
    'mean_attention',
    'similarity',
    'tome',
    'evit',
  ]
  assert pruning.pruner_options('none') == ()
  for name in list(pruning.PRUNERS)[1:-2]:
    assert pruning.pruner_options(name) == ('r_max', 'alpha', 'schedule')
  assert pruning.pruner_options('tome') == ('r', 'steer', 'steer_weight')
  assert pruning.pruner_options('evit') == ('keep_rate', 'layers')


def test_unknown_pruner():
  with pytest.raises(UserError) as e:
    pruning.make_pruner('magic', CFG, r_max=0.5, alpha=1.0)
  assert str(e.value) == (
    "Unknown pruner 'magic'; choose from: none, random, greedy, "
    'cls_attention, inverse_cls_attention, cls_value_attention, mean_attention, similarity, '
    'tome, evit.'
  )


@pytest.mark.parametrize(
  'name,options,message',
  [
    (
      'cls_attention',
      {'r_max': 0.5, 'alpha': 1.0, 'beta': 2.0},
      "Pruner 'cls_attention' takes r_max, alpha, schedule; got unexpected option 'beta'.",
    ),
    (
      'greedy',
      {'r_max': 0.5},
      "Pruner 'greedy' takes r_max, alpha, schedule; option 'alpha' is missing.",
    ),
    ('none', {'r_max': 0.5}, "Pruner 'none' takes no options; got unexpected option 'r_max'."),
    ('random', {'r_max': 1.5, 'alpha': 1.0}, "Pruner 'random': r_max=1.5 must be in [0, 1]."),
    (
      'similarity',
      {'r_max': 0.5, 'alpha': 0.0},
      "Pruner 'similarity': alpha=0.0 must be positive.",
    ),
  ],
)
def test_bad_options_are_one_line_user_errors(name, options, message):
  with pytest.raises(UserError) as e:
    pruning.make_pruner(name, CFG, **options)
  assert str(e.value) == message
