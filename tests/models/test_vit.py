"""ViT parameter tree, presets, attention statistics, keep-mask semantics and the stage methods."""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import pruning
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit

TINY = vit.ViTConfig(
  num_classes=10,
  image_size=8,
  patch_size=2,
  hidden_size=32,
  num_layers=3,
  num_heads=4,
  mlp_dim=64,
  num_channels=1,
)


@pytest.fixture(scope='module')
def tiny():
  model = vit.VisionTransformer(TINY)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), images)['params']
  # The head is zero-initialised (logits all 0): random weights make logit comparisons meaningful.
  params = dict(
    params,
    head=dict(kernel=jax.random.normal(jax.random.PRNGKey(2), (32, 10)), bias=jnp.zeros(10)),
  )
  return model, params, images


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


# Parameter paths and shapes of a 2-layer TINY, as the compact module of 687ce21 created them:
# every checkpoint written before the stages became methods must still load.
TINY_PARAM_SHAPES = {
  'Transformer/encoder_norm/bias': (32,),
  'Transformer/encoder_norm/scale': (32,),
  **{
    f'Transformer/encoderblock_{i}/{name}': shape
    for i in range(2)
    for name, shape in {
      'LayerNorm_0/bias': (32,),
      'LayerNorm_0/scale': (32,),
      'LayerNorm_2/bias': (32,),
      'LayerNorm_2/scale': (32,),
      'MlpBlock_3/Dense_0/bias': (64,),
      'MlpBlock_3/Dense_0/kernel': (32, 64),
      'MlpBlock_3/Dense_1/bias': (32,),
      'MlpBlock_3/Dense_1/kernel': (64, 32),
      'MultiHeadDotProductAttention_1/key/bias': (4, 8),
      'MultiHeadDotProductAttention_1/key/kernel': (32, 4, 8),
      'MultiHeadDotProductAttention_1/out/bias': (32,),
      'MultiHeadDotProductAttention_1/out/kernel': (4, 8, 32),
      'MultiHeadDotProductAttention_1/query/bias': (4, 8),
      'MultiHeadDotProductAttention_1/query/kernel': (32, 4, 8),
      'MultiHeadDotProductAttention_1/value/bias': (4, 8),
      'MultiHeadDotProductAttention_1/value/kernel': (32, 4, 8),
    }.items()
  },
  'Transformer/posembed_input/pos_embedding': (1, 17, 32),
  'cls': (1, 1, 32),
  'embedding/bias': (32,),
  'embedding/kernel': (2, 2, 1, 32),
  'head/bias': (10,),
  'head/kernel': (32, 10),
}


def test_parameter_tree_is_the_one_checkpoints_hold():
  cfg = dataclasses.replace(TINY, num_layers=2)
  variables = jax.eval_shape(
    lambda: vit.VisionTransformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
  )
  assert list(variables) == ['params']
  flat = flax.traverse_util.flatten_dict(variables['params'], sep='/')
  assert {k: tuple(v.shape) for k, v in flat.items()} == TINY_PARAM_SHAPES
  assert {v.dtype for v in flat.values()} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
  'variant,expected',
  [
    ('deit_tiny', 5_717_416),  # timm deit_tiny_patch16_224
    ('deit_small', 22_050_664),  # timm deit_small_patch16_224
    ('B/16', 86_567_656),  # timm vit_base_patch16_224
  ],
)
def test_preset_parameter_counts_match_timm(variant, expected):
  cfg = vit.make_vit_config(variant, num_classes=1000, image_size=224, num_channels=3)
  model = vit.VisionTransformer(cfg)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
  assert _num_params(shapes['params']) == expected
  assert cfg.num_tokens == 197


def test_cifar10_presets_have_seed_002_geometry():
  for variant in ('cifar10_small', 'cls_paper_cifar10'):
    cfg = vit.make_vit_config(variant, num_classes=10, image_size=48, num_channels=3)
    assert (cfg.num_tokens, cfg.num_layers) == (145, 8)
  paper = vit.make_vit_config('cls_paper_cifar10', num_classes=10, image_size=48, num_channels=3)
  assert (paper.hidden_size, paper.num_heads, paper.mlp_dim) == (512, 8, 2048)
  model = vit.VisionTransformer(paper)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 48, 48, 3))))
  # By hand: 8 blocks of 4 * (512^2 + 512) attention + 2 * 512 * 2048 + 2048 + 512 MLP + 2048
  # norm = 3,152,384 each; patch conv 4 * 4 * 3 * 512 + 512, CLS 512, positions 145 * 512,
  # final norm 1024, head 512 * 10 + 10.
  assert _num_params(shapes['params']) == 8 * 3_152_384 + 25_088 + 512 + 74_240 + 1024 + 5130
  with pytest.raises(UserError, match="renamed: use 'cifar10_small'"):
    vit.make_vit_config('cifar10', num_classes=10, image_size=48, num_channels=3)


def test_overrides_and_bad_geometry():
  digits = dict(num_classes=10, image_size=8, num_channels=1)
  cfg = vit.make_vit_config('digits', **digits, num_layers=2, hidden_size=48)
  assert cfg == vit.ViTConfig(
    num_classes=10,
    image_size=8,
    patch_size=2,
    hidden_size=48,
    num_layers=2,
    num_heads=4,
    mlp_dim=128,
    num_channels=1,
  )
  cases = [
    (dict(patch_size=3), 'image_size 8 is not a multiple of patch_size 3'),
    (dict(num_heads=3), 'hidden_size 64 is not divisible by num_heads 3'),
    (dict(num_layers=-1), 'model.num_layers must be an integer >= 0'),
    (dict(dropout_rate=1.0), r'model.dropout_rate must be in \[0, 1\)'),
    (dict(dtype='float16'), "Unknown model dtype 'float16'"),
  ]
  for overrides, message in cases:
    with pytest.raises(UserError, match=message) as e:
      vit.make_vit_config('digits', **digits, **overrides)
    assert '\n' not in str(e.value)
  with pytest.raises(UserError, match="Unknown model variant 'huge'; choose one of: Ti/16, "):
    vit.make_vit_config('huge', **digits)
  with pytest.raises(UserError, match='num_classes >= 1'):
    vit.make_vit_config('digits', num_classes=0, image_size=8, num_channels=1)


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


def test_seed_0_init_and_logits_are_those_of_earlier_versions(tiny):
  """Values printed by the compact module of 687ce21 for this fixture: the same seed still gives
  the same initial params (they depend on the module paths) and the same logits."""
  model, params, images = tiny
  np.testing.assert_allclose(
    params['Transformer']['posembed_input']['pos_embedding'][0, 0, :3],
    [-0.01986202, -0.02177846, -0.00236522],
    atol=1e-6,
  )
  np.testing.assert_allclose(
    params['Transformer']['encoderblock_2']['MlpBlock_3']['Dense_0']['kernel'][0, :3],
    [-0.0632385, -0.01785934, 0.07156581],
    atol=1e-6,
  )
  logits, _ = model.apply({'params': params}, images)
  np.testing.assert_allclose(
    logits[0, :4], [-6.979302, -0.09058291, 2.9891336, -6.018269], atol=1e-4
  )
  mask = jnp.ones((3, TINY.num_tokens)).at[:, 5].set(0.0)
  logits, _ = model.apply({'params': params}, images, keep_mask=mask)
  np.testing.assert_allclose(
    logits[0, :4], [-6.8056107, -0.3491447, 2.0795221, -5.8247623], atol=1e-4
  )


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


def test_value_weighted_cls_attention_matches_hand_computation():
  # 2 heads, 3 tokens; CLS rows per head and value norms per (token, head).
  probs = np.zeros((1, 2, 3, 3), np.float32)
  probs[0, 0, 0] = [0.5, 0.25, 0.25]
  probs[0, 1, 0] = [0.2, 0.6, 0.2]
  values = np.zeros((1, 3, 2, 2), np.float32)
  values[0, :, 0] = [[3, 4], [0, 1], [0, 2]]  # Norms 5, 1, 2 in head 0.
  values[0, :, 1] = [[1, 0], [0, 3], [0, 0]]  # Norms 1, 3, 0 in head 1.
  stats = vit.token_statistics(jnp.asarray(probs), jnp.ones((1, 3)), jnp.asarray(values))
  expected = [(0.5 * 5 + 0.2 * 1) / 2, (0.25 * 1 + 0.6 * 3) / 2, (0.25 * 2 + 0.2 * 0) / 2]
  np.testing.assert_allclose(stats.cls_value_attention[0], expected, rtol=1e-6)
  np.testing.assert_allclose(stats.cls_attention[0], [0.35, 0.425, 0.225], rtol=1e-6)


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('merged', [False, True])
def test_fused_attention_gives_the_explicit_paths_logits_and_statistics(tiny, masked, merged):
  """Without `mean_attention` attention runs through jax.nn.dot_product_attention and the CLS
  statistics come from the CLS row alone: same logits and CLS statistics as the explicit path,
  with a dropped key and with ToMe's proportional attention (sizes != 1)."""
  model, params, images = tiny
  mask = jnp.ones((3, TINY.num_tokens)).at[:, 5].set(0.0) if masked else None
  merger = None
  if merged:
    merger = pruning.make_pruner('tome', TINY, r=3).merger
  run = lambda statistics: model.apply(
    {'params': params}, images, keep_mask=mask, token_merger=merger, statistics=statistics
  )
  explicit, aux_explicit = run(vit.STATISTICS)
  cls_only = ('cls_attention', 'cls_value_attention')
  fused, aux_fused = run(cls_only)
  bare, aux_bare = run(())
  np.testing.assert_allclose(fused, explicit, atol=1e-5)
  np.testing.assert_allclose(bare, explicit, atol=1e-5)
  for s_explicit, s_fused, s_bare in zip(aux_explicit.stats, aux_fused.stats, aux_bare.stats):
    for name in cls_only:
      np.testing.assert_allclose(getattr(s_fused, name), getattr(s_explicit, name), atol=1e-6)
    assert s_fused.mean_attention is None
    assert s_bare == vit.TokenStats()


def test_an_unknown_statistic_is_an_error(tiny):
  model, params, images = tiny
  with pytest.raises(ValueError, match="unknown statistic 'cls'"):
    model.apply({'params': params}, images, statistics=('cls',))


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
  # Changing the dropped token's pixels (token 5 = patch 4: row 1, col 0) cannot change the logits.
  row, col = divmod(5 - 1, TINY.image_size // TINY.patch_size)
  p = TINY.patch_size
  changed = images.at[:, row * p : (row + 1) * p, col * p : (col + 1) * p, :].add(3.0)
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


def _stages(model, params, images, keep_mask, *, train=False, rngs=None):
  """The forward pass stage by stage, each through `model.apply(..., method=...)`."""
  apply = functools.partial(model.apply, {'params': params}, rngs=rngs or {})
  x = apply(images, train=train, method='embed')
  stats = []
  for layer in range(model.config.num_layers):
    x, s = apply(layer, x, keep_mask, train=train, method=vit.VisionTransformer.block)
    stats.append(s)
  return apply(x, method='readout'), stats


@pytest.mark.parametrize('masked', [False, True])
def test_stage_methods_compose_to_the_model(tiny, masked):
  model, params, images = tiny
  ones = jnp.ones((3, TINY.num_tokens))
  mask = ones.at[:, 7].set(0.0) if masked else ones
  expected, aux = model.apply({'params': params}, images, keep_mask=mask if masked else None)
  logits, stats = _stages(model, params, images, mask)
  np.testing.assert_array_equal(logits, expected)
  for layer, s in enumerate(stats):
    for name in vit.STATISTICS:
      np.testing.assert_array_equal(getattr(s, name), getattr(aux.stats[layer], name))
  # The stages honour the mask: dropping token 7 changes the logits.
  plain, _ = model.apply({'params': params}, images)
  assert np.allclose(logits, plain) != masked


def test_stage_methods_draw_the_same_dropout_as_the_model(tiny):
  _, params, images = tiny
  model = vit.VisionTransformer(dataclasses.replace(TINY, dropout_rate=0.3))
  mask = jnp.ones((3, TINY.num_tokens))
  rngs = {'dropout': jax.random.PRNGKey(5)}
  expected, _ = model.apply({'params': params}, images, train=True, rngs=rngs)
  # What the compact module of 687ce21 drew from this rng: same dropout masks as before.
  np.testing.assert_allclose(
    expected[0, :4], [0.76820564, 0.8191681, 0.41685116, -5.8071346], atol=1e-4
  )
  logits, _ = _stages(model, params, images, mask, train=True, rngs=rngs)
  np.testing.assert_array_equal(logits, expected)
  inference, _ = model.apply({'params': params}, images)
  assert not np.allclose(expected, inference)  # Dropout did act.


def test_block_index_out_of_range_is_a_clear_error(tiny):
  model, params, images = tiny
  x = model.apply({'params': params}, images, method='embed')
  with pytest.raises(ValueError, match='layer 3 out of range: the model has 3'):
    model.apply({'params': params}, 3, x, jnp.ones(x.shape[:2]), method='block')
