"""ToMe and EViT: hand examples, and parity with a numpy reference transcribed step by step from
their published code (facebookresearch/ToMe `tome/merge.py` + `tome/patch/timm.py`, EViT's
`evit.py` block), at DeiT-S geometry with random weights."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from vitprune_jax import pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import visualize
from vitprune_jax.models import vit
from vitprune_jax.pruning import merging


def test_bipartite_soft_matching_by_hand():
  # Tokens 0 (CLS), 2, 4 form A; 1, 3 form B. Token 2 points like token 3 (cosine 1), token 4
  # like token 1 but less (cosine 0.8); CLS never merges.
  metric = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
  unm, src, dst = merging.bipartite_soft_matching(metric, 1)
  assert src.tolist() == [1] and dst.tolist() == [1]  # A index 1 (token 2) -> B index 1 (token 3).
  assert unm.tolist() == [0, 2]  # CLS and token 4 stay, by position.
  x = jnp.arange(10.0).reshape(5, 2)
  size = jnp.array([1.0, 1.0, 1.0, 3.0, 1.0])
  merged, new_size = merging.merge_weighted(x, size, unm, src, dst)
  # [CLS, token 4, token 1, token 3 + token 2 weighted by size: (3 * [6, 7] + [4, 5]) / 4].
  np.testing.assert_allclose(merged, [[0, 1], [8, 9], [2, 3], [5.5, 6.5]])
  np.testing.assert_allclose(new_size, [1, 1, 1, 4])
  unm, src, dst = merging.bipartite_soft_matching(metric, 2)
  assert src.tolist() == [1, 2] and dst.tolist() == [1, 0] and unm.tolist() == [0]


def test_steering_spares_the_protected_tokens_by_hand():
  # The metric of the hand example above: unsteered, token 2 merges into token 3 (edge 1.0).
  metric = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
  # Sparing token 2 by 0.5: its best edge is 0.5 < 0.8, so token 4 merges into token 1.
  unm, src, dst = merging.bipartite_soft_matching(metric, 1, jnp.array([0, 0, 0.5, 0, 0]))
  assert src.tolist() == [2] and dst.tolist() == [0] and unm.tolist() == [0, 1]
  # Sparing token 3 (a B token) by 0.5: token 2's edges are 0.8 (token 1) and 0.5, token 4's 0.6
  # and -0.5, so token 2 merges into token 1.
  unm, src, dst = merging.bipartite_soft_matching(metric, 1, jnp.array([0, 0, 0, 0.5, 0]))
  assert src.tolist() == [1] and dst.tolist() == [0] and unm.tolist() == [0, 2]
  # Patches [1, 2, 3]: mean 2, standard deviation sqrt(2/3); CLS gets no penalty.
  z = 1 / math.sqrt(2 / 3)
  penalty = merging.standardised_penalty(jnp.array([9.0, 1.0, 2.0, 3.0]), 2.0)
  np.testing.assert_allclose(penalty, [0, -2 * z, 0, 2 * z], rtol=1e-5)
  np.testing.assert_array_equal(merging.standardised_penalty(jnp.full((4,), 7.0), 2.0), 0.0)


def test_steered_tome_at_weight_zero_is_tome():
  cfg = vit.ViTConfig(10, 16, 4, 32, 2, 4, 64, num_channels=1)
  model = vit.VisionTransformer(cfg)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(1), images)['params']
  head = jax.random.normal(jax.random.PRNGKey(2), params['head']['kernel'].shape)
  params = {**params, 'head': {**params['head'], 'kernel': head}}  # Not zero: logits differ.
  tome = pruning.make_pruner('tome', cfg, r=4)
  plain, kept = pruning.forward(model, params, images, tome)
  still = pruning.make_pruner('tome', cfg, r=4, steer='cls_attention', steer_weight=0.0)
  steered = pruning.make_pruner('tome', cfg, r=4, steer='cls_attention', steer_weight=5.0)
  assert steered.name == 'tome+cls_attention' and steered.statistics == ('cls_attention',)
  assert steered.merge_kind == 'tome' and steered.budget == tome.budget
  logits, steered_kept = pruning.forward(model, params, images, still)
  np.testing.assert_array_equal(logits, plain)
  logits, steered_kept = pruning.forward(model, params, images, steered)
  assert steered_kept.tolist() == kept.tolist()
  assert not np.allclose(logits, plain)  # Other tokens merged.
  # Source tracing appends columns to the tokens; the score still reads only the model's width.
  sources = visualize.merged_sources(model, params, images, steered)
  assert sources.shape == (2, 2, 17, 16) and (sources[:, -1, :9].sum(axis=1) > 0).all()
  with pytest.raises(UserError, match="steer='random' is not a scoring heuristic"):
    pruning.make_pruner('tome', cfg, r=4, steer='random')
  with pytest.raises(UserError, match='steer_weight=-1.0 must be >= 0'):
    pruning.make_pruner('tome', cfg, r=4, steer='similarity', steer_weight=-1.0)
  with pytest.raises(ValueError, match='no scores to steer'):
    pruning.steered_tome(cfg, 4, tome, 1.0)


def test_tome_counts_cap_r_at_half_the_patches():
  assert merging.tome_r_per_layer(11, 4, 4) == [4, 3, 1, 1]
  assert merging.tome_counts(11, 4, 4) == [7, 4, 3, 2]
  assert merging.tome_counts(197, 12, 13)[-1] == 197 - 12 * 13


def test_evit_fuses_the_inattentive_tokens_by_their_attention():
  x = jnp.arange(12.0).reshape(6, 2)
  attention = jnp.array([0.5, 0.1, 0.3, 0.05, 0.4, 0.15])  # Patches 1..5.
  out = merging.evit_fuse_one(x, attention, keep=2)
  # Keeps patches 2 and 4 (by position), fuses 1, 3, 5 as 0.1 x1 + 0.05 x3 + 0.15 x5.
  fused = 0.1 * x[1] + 0.05 * x[3] + 0.15 * x[5]
  np.testing.assert_allclose(out, np.stack([x[0], x[2], x[4], fused]), rtol=1e-6)
  # ceil(0.7 * 196) = 138 patches + CLS + the fused token; then ceil(0.7 * 139) = 98, and so on.
  assert (
    merging.evit_counts(197, 12, 0.7, (3, 6, 9)) == [197] * 3 + [140] * 3 + [100] * 3 + [72] * 3
  )
  assert merging.default_evit_layers(12) == (3, 6, 9)


def test_no_merges_give_exactly_the_plain_vit():
  cfg = vit.ViTConfig(10, 16, 4, 32, 2, 4, 64, num_channels=1)
  model = vit.VisionTransformer(cfg)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(1), images)['params']
  plain, _ = pruning.forward(model, params, images)
  for pruner in (
    pruning.make_pruner('tome', cfg, r=0),
    pruning.make_pruner('evit', cfg, keep_rate=1.0),
  ):
    logits, kept = pruning.forward(model, params, images, pruner)
    np.testing.assert_array_equal(logits, plain)
    assert kept.tolist() == [[17, 17]] * 2


def test_merge_into_kept_by_hand():
  # Kept: CLS (0) and tokens 2, 4. Token 1 points like token 4 (cosine 1; like CLS too, which never
  # receives), token 3 like token 2 (cosine 0.8 vs 0.6 to token 4); token 5 is masked out.
  metric = jnp.array([[0.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
  x = jnp.arange(12.0).reshape(6, 2)
  size = jnp.array([1.0, 2.0, 1.0, 1.0, 3.0, 1.0])
  keep_mask = jnp.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
  merged, new_size = merging.merge_into_kept(x, size, keep_mask, metric, jnp.array([0, 2, 4]))
  # Token 2 + token 3: ([4, 5] + [6, 7]) / 2; token 4 (size 3) + token 1 (size 2): (3 [8, 9] +
  # 2 [2, 3]) / 5.
  np.testing.assert_allclose(merged, [[0, 1], [5, 6], [5.6, 6.6]], rtol=1e-6)
  np.testing.assert_allclose(new_size, [1, 2, 5])


def test_drop_merge_keeps_the_score_selection_and_loses_nothing():
  cfg = vit.ViTConfig(10, 16, 4, 32, 2, 4, 64, num_channels=1)
  model = vit.VisionTransformer(cfg)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 1))
  params = model.init(jax.random.PRNGKey(1), images)['params']
  head = jax.random.normal(jax.random.PRNGKey(2), params['head']['kernel'].shape)
  params = {**params, 'head': {**params['head'], 'kernel': head}}  # Not zero: logits differ.
  plain, _ = pruning.forward(model, params, images)
  full = pruning.at_capacities('similarity', cfg, (17, 17))
  logits, _ = pruning.forward(model, params, images, pruning.with_merging(full))
  np.testing.assert_allclose(logits, plain, atol=1e-5)  # Nothing dropped: the plain ViT.
  pruner = pruning.at_capacities('cls_attention', cfg, (9, 5))
  merged = pruning.with_merging(pruner)
  assert merged.name == 'cls_attention+merge' and merged.merge_kind == 'drop_merge'
  logits, kept = pruning.forward(model, params, images, merged)
  dropped, _ = pruning.forward(model, params, images, pruner)
  assert kept.tolist() == [[9, 5]] * 2
  assert not np.allclose(logits, dropped)  # The merged tokens changed what CLS sees.
  with pytest.raises(ValueError, match='no scores'):
    pruning.with_merging(pruning.make_pruner('tome', cfg, r=2))
  with pytest.raises(ValueError, match='threshold'):
    pruning.with_merging(dataclasses.replace(pruner, threshold=0.0))
  with pytest.raises(ValueError, match='>= 2 tokens'):
    pruning.with_merging(pruning.at_capacities('random', cfg, (9, 1)))


def test_bad_options_are_one_line_errors():
  cfg = vit.ViTConfig(10, 16, 4, 32, 2, 4, 64, num_channels=1)
  with pytest.raises(UserError, match="Pruner 'tome': r=-1"):
    pruning.make_pruner('tome', cfg, r=-1)
  with pytest.raises(UserError, match="Pruner 'evit': keep_rate=0"):
    pruning.make_pruner('evit', cfg, keep_rate=0.0)
  with pytest.raises(UserError, match="Pruner 'evit': layers=\\(5,\\)"):
    pruning.make_pruner('evit', cfg, keep_rate=0.5, layers=(5,))
  with pytest.raises(UserError, match="No heuristic pruner 'tome'"):
    pruning.at_capacities('tome', cfg, (17, 17))


# --- The numpy reference, one image at a time, transcribed from the torch code. ---


def _layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _attention(x, p, heads, size):
  """timm's Attention with ToMe's proportional attention; returns (out, k.mean(heads), attn)."""
  q = np.einsum('nd,dhe->hne', x, p['query']['kernel']) + p['query']['bias'][:, None]
  k = np.einsum('nd,dhe->hne', x, p['key']['kernel']) + p['key']['bias'][:, None]
  v = np.einsum('nd,dhe->hne', x, p['value']['kernel']) + p['value']['bias'][:, None]
  attn = q @ k.transpose(0, 2, 1) * q.shape[-1] ** -0.5
  if size is not None:
    attn = attn + np.log(size)[None, None, :]
  attn = np.exp(attn - attn.max(-1, keepdims=True))
  attn = attn / attn.sum(-1, keepdims=True)
  out = np.einsum('hne,hed->nd', attn @ v, p['out']['kernel']) + p['out']['bias']
  return out, k.mean(0), attn


def _mlp(x, p):
  h = x @ p['Dense_0']['kernel'] + p['Dense_0']['bias']
  h = 0.5 * h * (1 + special.erf(h / np.sqrt(2)))
  return h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']


def _tome_merge(metric, x, size, r):
  """merge.bipartite_soft_matching (class_token=True) + merge_wavg, for one image."""
  t = metric.shape[0]
  r = min(r, (t - 1) // 2)
  if r <= 0:
    return x, size
  metric = metric / np.linalg.norm(metric, axis=-1, keepdims=True)
  a, b = metric[::2], metric[1::2]
  scores = a @ b.T
  scores[0, :] = -math.inf
  node_max, node_idx = scores.max(-1), scores.argmax(-1)
  edge_idx = np.argsort(-node_max, kind='stable')
  unm_idx, src_idx = np.sort(edge_idx[r:]), edge_idx[:r]
  dst_idx = node_idx[src_idx]

  def merge(v):  # mode="sum"
    src, dst = v[::2].copy(), v[1::2].copy()
    unm = src[unm_idx]
    np.add.at(dst, dst_idx, src[src_idx])
    return np.concatenate([unm, dst])

  x = merge(x * size[:, None])
  size = merge(size[:, None])[:, 0]
  return x / size[:, None], size


def _evit_fuse(x, attn, keep_rate):
  n = x.shape[0]
  left = math.ceil(keep_rate * (n - 1))
  cls_attn = attn[:, 0, 1:].mean(0)
  idx = np.argsort(-cls_attn, kind='stable')[:left]
  compl = np.setdiff1d(np.arange(n - 1), idx)
  non_cls = x[1:]
  extra = (non_cls[compl] * cls_attn[compl][:, None]).sum(0, keepdims=True)
  return np.concatenate([x[:1], non_cls[idx], extra])


def _reference_logits(params, cfg, image, method, option):
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  ps = cfg.patch_size
  g = cfg.image_size // ps
  patches = image.reshape(g, ps, g, ps, -1).transpose(0, 2, 1, 3, 4).reshape(g * g, -1)
  kernel = p['embedding']['kernel'].reshape(-1, cfg.hidden_size)
  x = patches @ kernel + p['embedding']['bias']
  x = np.concatenate([p['cls'][0], x]) + p['Transformer']['posembed_input']['pos_embedding'][0]
  size = np.ones(x.shape[0])
  for layer in range(cfg.num_layers):
    blk = p['Transformer'][f'encoderblock_{layer}']
    prop = size if method == 'tome' else None
    out, metric, attn = _attention(
      _layer_norm(x, blk['LayerNorm_0']), blk['MultiHeadDotProductAttention_1'], cfg.num_heads, prop
    )
    x = x + out
    if method == 'tome':
      x, size = _tome_merge(metric, x, size, option)
    elif layer in (3, 6, 9):
      x = _evit_fuse(x, attn, option)
    x = x + _mlp(_layer_norm(x, blk['LayerNorm_2']), blk['MlpBlock_3'])
  x = _layer_norm(x, p['Transformer']['encoder_norm'])
  return x[0] @ p['head']['kernel'] + p['head']['bias']


DEIT_S = vit.ViTConfig(1000, 224, 16, 384, 12, 6, 1536, num_channels=3)


@pytest.fixture(scope='module')
def deit_s():
  model = vit.VisionTransformer(DEIT_S)
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 224, 224, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), images[:1])['params']
  # A head with weight, so the logits depend on the merges (the trained-from-zero head is zero).
  head = jax.random.normal(jax.random.PRNGKey(2), params['head']['kernel'].shape) * 0.05
  return model, dict(params, head=dict(params['head'], kernel=head)), images


@pytest.mark.slow
@pytest.mark.parametrize(
  'method, option, opts',
  [
    ('tome', 8, {'r': 8}),
    ('tome', 13, {'r': 13}),
    ('evit', 0.7, {'keep_rate': 0.7, 'layers': (3, 6, 9)}),
  ],
)
def test_parity_with_the_reference_code_at_deit_s_geometry(deit_s, method, option, opts):
  model, params, images = deit_s
  pruner = pruning.make_pruner(method, DEIT_S, **opts)
  logits, kept = pruning.forward(model, params, images, pruner)
  expected = np.stack(
    [_reference_logits(params, DEIT_S, np.asarray(im, np.float64), method, option) for im in images]
  )
  diff = float(np.max(np.abs(np.asarray(logits, np.float64) - expected)))
  print(f'{method} {opts}: max abs logit difference {diff:.2e}')
  assert diff <= 1e-4
  assert kept[0, -1] == pruner.budget[-1] and pruner.budget[-1] < DEIT_S.num_tokens
  plain, _ = pruning.forward(model, params, images)
  assert float(np.max(np.abs(plain - logits))) > 1e-3  # The merges changed the prediction.
