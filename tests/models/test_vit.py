"""ViT shapes, parameter counts of the presets, attention statistics and keep-mask semantics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax.errors import UserError
from vitprune_jax.models import vit

TINY = vit.ViTConfig(num_classes=10, image_size=8, patch_size=2, hidden_size=32, num_layers=3, num_heads=4,
                     mlp_dim=64, num_channels=1)


@pytest.fixture(scope='module')
def tiny():
  model = vit.VisionTransformer(TINY)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  # The head is zero-initialised (logits all 0); give it weights so logit comparisons mean something.
  params = dict(params, head=dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (32, 10)),
                                  bias=jnp.zeros(10)))
  return model, params, images


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('variant,image_size,expected', [
    ('deit_tiny', 224, 5_717_416),  # timm deit_tiny_patch16_224
    ('deit_small', 224, 22_050_664),  # timm deit_small_patch16_224
    ('B/16', 224, 86_567_656),  # timm vit_base_patch16_224
])
def test_preset_parameter_counts_match_timm(base_config, variant, image_size, expected):
  base_config.model.variant = variant
  base_config.dataset.image_size = image_size
  cfg = vit.vit_config_from(base_config, num_classes=1000, num_channels=3)
  model = vit.VisionTransformer(cfg)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  assert _num_params(shapes['params']) == expected
  assert cfg.num_tokens == 197


def test_cifar10_preset_has_seed_002_geometry(base_config):
  base_config.model.variant = 'cifar10'
  base_config.dataset.image_size = 48
  cfg = vit.vit_config_from(base_config, num_classes=10, num_channels=3)
  assert (cfg.num_tokens, cfg.num_layers) == (145, 8)


def test_overrides_and_bad_geometry(base_config):
  base_config.model.num_layers = 2
  base_config.model.hidden_size = 48
  cfg = vit.vit_config_from(base_config, num_classes=10, num_channels=1)
  assert (cfg.num_layers, cfg.hidden_size, cfg.patch_size) == (2, 48, 2)
  base_config.model.patch_size = 3
  with pytest.raises(UserError, match='multiple of patch_size'):
    vit.vit_config_from(base_config, num_classes=10, num_channels=1)
  base_config.model.variant = 'huge'
  with pytest.raises(UserError, match='Unknown model variant'):
    vit.vit_config_from(base_config, num_classes=10, num_channels=1)


def test_output_shapes_and_statistics(tiny):
  model, params, images = tiny
  logits, aux = model.apply({'params': params}, images)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  assert len(aux.stats) == TINY.num_layers
  for s in aux.stats:
    assert s.cls_attention.shape == (3, TINY.num_tokens)
    assert s.mean_attention.shape == (3, TINY.num_tokens)
    # A softmax row: CLS's attention over all tokens sums to one.
    np.testing.assert_allclose(s.cls_attention.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.asarray(s.cls_attention) >= 0)
  assert aux.keep_mask.shape == (3, TINY.num_tokens)


def test_token_statistics_match_hand_computation():
  rng = np.random.default_rng(0)
  probs = rng.random((1, 2, 4, 4)).astype(np.float32)
  probs /= probs.sum(-1, keepdims=True)
  mask = np.array([[1, 1, 0, 1]], np.float32)
  stats = vit.token_statistics(jnp.asarray(probs), jnp.asarray(mask))
  p = probs.mean(1)[0]
  np.testing.assert_allclose(stats.cls_attention[0], p[0], rtol=1e-6)
  # Token 1 is attended by kept patch queries other than itself and CLS: only query 3.
  np.testing.assert_allclose(stats.mean_attention[0, 1], p[3, 1], rtol=1e-6)
  # Token 3: queries 1 (query 2 is dropped).
  np.testing.assert_allclose(stats.mean_attention[0, 3], p[1, 3], rtol=1e-6)
  # Token 2 (dropped itself) still gets a score: mean over queries 1 and 3.
  np.testing.assert_allclose(stats.mean_attention[0, 2], (p[1, 2] + p[3, 2]) / 2, rtol=1e-6)


def test_all_ones_mask_changes_nothing(tiny):
  model, params, images = tiny
  plain, _ = model.apply({'params': params}, images)
  ones, _ = model.apply({'params': params}, images, keep_mask=jnp.ones((3, TINY.num_tokens)))
  np.testing.assert_array_equal(plain, ones)


def test_dropped_tokens_are_ignored_and_frozen(tiny):
  model, params, images = tiny
  mask = jnp.ones((3, TINY.num_tokens)).at[:, 5].set(0.0)
  seen = []

  def record(i, x, keep_mask, stats):
    seen.append(x)
    return x, keep_mask

  logits, aux = model.apply({'params': params}, images, keep_mask=mask, token_selector=record)
  # Nobody attends to the dropped token...
  for s in aux.stats:
    np.testing.assert_allclose(s.cls_attention[:, 5], 0.0, atol=1e-7)
  # ...and its state is the same after every block.
  for x in seen[1:]:
    np.testing.assert_array_equal(x[:, 5], seen[0][:, 5])
  plain, _ = model.apply({'params': params}, images)
  assert not np.allclose(logits, plain)
  # Changing the dropped token's pixels (token 5 = patch 4: row 1, col 0) cannot change the prediction.
  row, col = divmod(5 - 1, TINY.image_size // TINY.patch_size)
  p = TINY.patch_size
  changed = images.at[:, row * p:(row + 1) * p, col * p:(col + 1) * p, :].add(3.0)
  logits2, _ = model.apply({'params': params}, changed, keep_mask=mask)
  np.testing.assert_allclose(logits2, logits, atol=1e-5)


def test_token_selector_can_drop_tokens_between_blocks(tiny):
  model, params, images = tiny

  def drop_token_3_after_block_0(i, x, keep_mask, stats):
    return x, keep_mask.at[:, 3].set(0.0) if i == 0 else keep_mask

  _, aux = model.apply({'params': params}, images, token_selector=drop_token_3_after_block_0)
  assert float(aux.stats[0].cls_attention[:, 3].min()) > 0  # Block 0 still saw it.
  np.testing.assert_allclose(aux.stats[1].cls_attention[:, 3], 0.0, atol=1e-7)
  assert float(aux.keep_mask[:, 3].max()) == 0.0


def test_bfloat16_compute(tiny):
  _, params, images = tiny
  model = vit.VisionTransformer(vit.ViTConfig(**{**TINY.__dict__, 'dtype': 'bfloat16'}))
  logits, _ = model.apply({'params': params}, images)
  ref, _ = vit.VisionTransformer(TINY).apply({'params': params}, images)
  assert logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, ref, atol=0.1 * float(jnp.abs(ref).max()) + 0.05)


def test_wrong_image_size_is_a_clear_error(tiny):
  model, params, _ = tiny
  with pytest.raises(ValueError, match='image_size'):
    model.apply({'params': params}, jnp.zeros((1, 16, 16, 1)))


def test_stage_functions_compose_to_the_model(tiny):
  model, params, images = tiny
  mask = jnp.ones((3, TINY.num_tokens)).at[:, 7].set(0.0)
  expected, _ = model.apply({'params': params}, images, keep_mask=mask)
  x = vit.embed(TINY, params, images)
  for layer in range(TINY.num_layers):
    x, _ = vit.apply_block(TINY, params, layer, x, mask)
  np.testing.assert_allclose(vit.readout(TINY, params, x), expected, atol=1e-5)
