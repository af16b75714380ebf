"""Each pruner: counts follow its budget, CLS is always kept, random is reproducible by key."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit
from vitprune_jax.pruning import flops, pruners

CFG = vit.ViTConfig(num_classes=10, image_size=16, patch_size=2, hidden_size=32, num_layers=4, num_heads=4,
                    mlp_dim=64, num_channels=1)  # 64 patches + CLS.


@pytest.fixture(scope='module')
def model_params_images():
  model = vit.VisionTransformer(CFG)
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  return model, params, images


@pytest.mark.parametrize('name', pruning.PRUNERS)
@pytest.mark.parametrize('mode', pruning.MODES)
def test_counts_follow_budget_and_cls_is_kept(model_params_images, name, mode):
  model, params, images = model_params_images
  pruner = pruning.make_pruner(name, CFG, r_max=0.7, alpha=1.0)
  selector = pruning.make_selector(pruner, mode=mode, rng=jax.random.PRNGKey(5))
  _, aux = model.apply({'params': params}, images, token_selector=selector)
  kept = np.stack([np.asarray(k) for k in aux.kept], axis=1)  # (B, L)
  np.testing.assert_array_equal(kept, np.broadcast_to(pruner.budget, kept.shape))
  assert np.all(np.asarray(aux.keep_mask)[:, 0] == 1)  # CLS (slot 0 in both modes).
  if mode == 'compact':
    assert aux.keep_mask.shape == (4, pruner.budget[-1])


def test_schedule_pruners_share_the_schedule():
  budget = tuple(pruning.tokens_per_layer(64, 4, 0.7, 1.0))
  for name in ('random', 'cls_attention', 'mean_attention', 'similarity'):
    assert pruning.make_pruner(name, CFG, r_max=0.7, alpha=1.0).budget == budget
  assert pruning.make_pruner('none', CFG, r_max=0.7, alpha=1.0).budget == (65,) * 4


def test_greedy_is_one_shot_within_the_schedule_flops():
  sched = pruning.make_pruner('cls_attention', CFG, r_max=0.7, alpha=1.0)
  greedy = pruning.make_pruner('greedy', CFG, r_max=0.7, alpha=1.0)
  assert len(set(greedy.budget)) == 1
  assert flops.vit_flops(CFG, greedy.budget) <= flops.vit_flops(CFG, sched.budget)
  one_more = [greedy.budget[0] + 1] * CFG.num_layers
  assert flops.vit_flops(CFG, one_more) > flops.vit_flops(CFG, sched.budget)


def test_random_is_reproducible_by_key(model_params_images):
  model, params, images = model_params_images
  pruner = pruning.make_pruner('random', CFG, r_max=0.7, alpha=1.0)
  run = lambda seed: model.apply({'params': params}, images, token_selector=pruning.make_selector(
      pruner, mode='mask', rng=jax.random.PRNGKey(seed)))[1].keep_mask
  np.testing.assert_array_equal(run(1), run(1))
  assert not np.array_equal(run(1), run(2))


def test_cls_attention_keeps_the_most_attended_tokens():
  stats = vit.TokenStats(cls_attention=jnp.array([[0.5, 0.1, 0.3, 0.05, 0.05]]),
                         mean_attention=jnp.zeros((1, 5)))
  pruner = pruners.Pruner('cls_attention', pruners.cls_attention_score, (3,))
  selector = pruning.make_selector(pruner, mode='mask')
  _, mask = selector(0, jnp.zeros((1, 5, 2)), jnp.ones((1, 5)), stats)
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0]])


def test_similarity_drops_a_duplicate_first():
  x = jnp.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0.01], [0, 0, 1.0]]])
  scores = pruners.similarity_score(0, x, jnp.ones((1, 4)), None, None)
  # Tokens 1 and 2 are near-duplicates: both score lowest; token 3 is unique.
  assert float(scores[0, 3]) > float(scores[0, 1])
  assert float(scores[0, 3]) > float(scores[0, 2])


def test_unknown_pruner():
  with pytest.raises(UserError, match='Unknown pruner'):
    pruning.make_pruner('magic', CFG, r_max=0.5, alpha=1.0)
