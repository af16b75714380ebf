"""DeiT's on-device augmentations, stochastic depth and distillation losses, against hand-computed
numbers or a plain numpy version of the same draws."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax.models import vit
from vitprune_jax.training import augment, train


def test_box_mask_by_hand():
  got = augment.box_mask(4, 5, top=1, left=2, h=2, w=2)
  want = np.zeros((4, 5), bool)
  want[1:3, 2:4] = True
  np.testing.assert_array_equal(got, want)


def test_cutmix_box_matches_timm_rand_bbox_in_numpy():
  key, lam, h, w = jax.random.PRNGKey(3), 0.64, 10, 8
  mask, lam_box = augment.cutmix_box(key, h, w, jnp.float32(lam))
  # timm: cut_rat = sqrt(1 - lam); cut = int(side * cut_rat); centre uniform; clip; same draws.
  ky, kx = jax.random.split(key)
  cy, cx = int(jax.random.randint(ky, (), 0, h)), int(jax.random.randint(kx, (), 0, w))
  cut_h, cut_w = int(h * 0.6), int(w * 0.6)  # 6, 4
  y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
  x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
  want = np.zeros((h, w), bool)
  want[y0:y1, x0:x1] = True
  np.testing.assert_array_equal(mask, want)
  assert float(lam_box) == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (h * w))


def _batch():
  images = jnp.arange(4 * 6 * 6, dtype=jnp.float32).reshape(4, 6, 6, 1)
  return images, jnp.eye(4)


def test_mixup_blends_the_batch_with_its_reverse_and_mixes_targets_alike():
  images, targets = _batch()
  out, mixed = augment.mixup_cutmix(
    jax.random.PRNGKey(0), images, targets, mixup_alpha=0.8, cutmix_alpha=0.0
  )
  lam = float(mixed[0, 0])
  assert 0.0 < lam < 1.0
  np.testing.assert_allclose(mixed[0], [lam, 0, 0, 1 - lam], atol=1e-6)
  np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], rtol=1e-5)


def test_cutmix_pastes_a_box_whose_area_is_one_minus_lambda():
  images, targets = _batch()
  for seed in range(5):
    out, mixed = augment.mixup_cutmix(
      jax.random.PRNGKey(seed), images, targets, mixup_alpha=0.0, cutmix_alpha=1.0
    )
    from_other = np.asarray(out[0] == images[3])[..., 0]
    assert np.all((out[0] == images[0])[..., 0] | from_other)
    lam = float(mixed[0, 0])
    assert lam == pytest.approx(1 - from_other.mean(), abs=1e-6)
    np.testing.assert_allclose(mixed[0], [lam, 0, 0, 1 - lam], atol=1e-6)


def test_mixing_off_or_never_is_the_identity():
  images, targets = _batch()
  key = jax.random.PRNGKey(0)
  out, t = augment.mixup_cutmix(key, images, targets, mixup_alpha=0.0, cutmix_alpha=0.0)
  assert out is images and t is targets
  out, t = augment.mixup_cutmix(key, images, targets, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.0)
  np.testing.assert_array_equal(out, images)
  np.testing.assert_array_equal(t, targets)


def test_both_on_switch_between_mixup_and_cutmix():
  images, targets = _batch()
  kinds = set()
  for seed in range(20):
    out, _ = augment.mixup_cutmix(
      jax.random.PRNGKey(seed), images, targets, mixup_alpha=0.8, cutmix_alpha=1.0
    )
    pasted = bool(np.all((out[0] == images[0]) | (out[0] == images[3])))
    kinds.add('cutmix' if pasted else 'mixup')
  assert kinds == {'cutmix', 'mixup'}


def test_random_erasing_fills_one_box_of_the_allowed_size_with_noise():
  image = jnp.full((32, 32, 3), 7.0)
  for seed in range(10):
    out = np.asarray(augment.random_erasing(jax.random.PRNGKey(seed), image, prob=1.0))
    changed = np.any(out != 7.0, axis=-1)
    rows, cols = np.nonzero(changed)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    # One rectangle, every pixel of it erased, of area share ~[0.02, 1/3] (rounded sides) and
    # aspect ratio in [0.3, 3.3].
    assert changed.sum() == h * w
    assert 0.02 * 1024 * 0.7 <= h * w <= 1024 / 3 * 1.3
    assert 0.3 / 1.6 <= h / w <= 3.3 * 1.6
    assert abs(out[changed].mean()) < 0.5 and 0.5 < out[changed].std() < 1.5  # N(0, 1) noise.
  np.testing.assert_array_equal(
    augment.random_erasing(jax.random.PRNGKey(0), image, prob=0.0), image
  )


def test_random_erasing_rate_and_determinism():
  images = jnp.zeros((400, 8, 8, 1))
  keys = jax.random.split(jax.random.PRNGKey(1), 400)
  erase = jax.vmap(lambda k, im: augment.random_erasing(k, im, prob=0.25))
  out = erase(keys, images)
  share = float(jnp.mean(jnp.any(out != 0, axis=(1, 2, 3))))
  assert share == pytest.approx(0.25, abs=0.07)
  np.testing.assert_array_equal(out, erase(keys, images))


def test_drop_path_zeroes_whole_examples_and_rescales_the_rest():
  y = jnp.ones((1000, 3, 2))
  out = np.asarray(vit.drop_path(y, 0.25, jax.random.PRNGKey(0)))
  per_example = out.reshape(1000, -1)
  np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75], rtol=1e-6)
  assert np.all(per_example.min(1) == per_example.max(1))  # All or nothing per example.
  assert per_example[:, 0].mean() == pytest.approx(1.0, abs=0.06)  # Unbiased.


def _tiny(drop_path_rate=0.0, num_layers=3):
  cfg = vit.make_vit_config(
    'digits',
    num_classes=10,
    image_size=8,
    num_channels=1,
    hidden_size=16,
    num_layers=num_layers,
    num_heads=2,
    mlp_dim=32,
    drop_path_rate=drop_path_rate,
  )
  return vit.create_model(cfg)


def test_stochastic_depth_is_linear_over_blocks_and_off_in_evaluation():
  model = _tiny(0.1)
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(1), images)['params']
  bound = model.bind({'params': params})
  rates = [getattr(bound.Transformer, f'encoderblock_{i}').drop_path_rate for i in range(3)]
  assert rates == pytest.approx([0.0, 0.05, 0.1])
  plain = _tiny(0.0)
  tokens = lambda m, **kw: m.apply({'params': params}, images, **kw)[1].tokens  # (The head is 0.)
  np.testing.assert_array_equal(tokens(model), tokens(plain))
  drawn = [tokens(model, train=True, rngs={'dropout': jax.random.PRNGKey(s)}) for s in range(8)]
  assert any(not np.allclose(drawn[0], t) for t in drawn[1:])
  np.testing.assert_array_equal(
    tokens(plain, train=True, rngs={'dropout': jax.random.PRNGKey(0)}), tokens(plain)
  )
  with pytest.raises(Exception, match='drop_path_rate'):
    _tiny(1.0)


def test_kl_distillation_by_hand():
  teacher = jnp.array([[0.0, math.log(3.0)]])  # softmax = (0.25, 0.75)
  student = jnp.zeros((1, 2))  # (0.5, 0.5)
  want = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
  assert float(train.kl_distillation(student, teacher, jnp.ones(1))) == pytest.approx(want, 1e-5)
  assert float(train.kl_distillation(teacher, teacher, jnp.ones(1))) == pytest.approx(0.0, abs=1e-7)
  # Temperature 2: softmax(teacher / 2) = (1, sqrt 3) / (1 + sqrt 3), scaled by T^2 = 4.
  p = np.array([1.0, math.sqrt(3.0)]) / (1 + math.sqrt(3.0))
  want_t = 4 * float(np.sum(p * np.log(p / 0.5)))
  got_t = float(train.kl_distillation(student, teacher, jnp.ones(1), temperature=2.0))
  assert got_t == pytest.approx(want_t, 1e-5)
  # A padding row counts for nothing.
  two = train.kl_distillation(
    jnp.concatenate([student, teacher]), jnp.concatenate([teacher, -teacher]), jnp.array([1.0, 0])
  )
  assert float(two) == pytest.approx(want, 1e-5)


def test_kept_token_mse_by_hand():
  student = jnp.zeros((1, 4, 2))
  teacher = jnp.array([[[9.0, 9.0], [1.0, 3.0], [2.0, 2.0], [5.0, 5.0]]])
  keep = jnp.array([[1.0, 1.0, 1.0, 0.0]])  # CLS is never compared; patch 3 was dropped.
  # Patch 1: (1 + 9) / 2 = 5; patch 2: (4 + 4) / 2 = 4; mean 4.5.
  assert float(train.kept_token_mse(student, teacher, keep, jnp.ones(1))) == pytest.approx(4.5)


def test_train_step_distils_from_a_teacher_and_augments_deterministically():
  from vitprune_jax import pruning

  model = _tiny()
  lr_fn = lambda _: 1e-3
  optimizer = train.create_optimizer(lr_fn, weight_decay=0.05, grad_clip_norm=1.0)
  state = train.create_train_state(jax.random.PRNGKey(0), model, optimizer, (8, 8, 1))
  rng = np.random.default_rng(0)
  batch = {
    'image': jnp.asarray(rng.normal(size=(8, 8, 8, 1)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
    'mask': jnp.ones(8),
  }
  distill = train.Distillation(model, logit_weight=0.5, token_weight=0.5)
  kw = dict(num_classes=10, label_smoothing=0.1, learning_rate_fn=lr_fn, distillation=distill)
  # The teacher is the student itself, unpruned: both losses are exactly 0.
  _, m = train.train_step(state, batch, state.params, **kw)
  assert float(m.compute()['distill_loss']) == pytest.approx(0.0, abs=1e-7)
  # Pruned in mask mode, the student's logits and kept tokens differ from the teacher's.
  pruner = pruning.make_pruner('cls_attention', model.config, r_max=0.8, alpha=1.0)
  _, m = train.train_step(state, batch, state.params, pruner=pruner, prune_execution='mask', **kw)
  assert float(m.compute()['distill_loss']) > 1e-4
  aug = train.BatchAugment(mixup_alpha=0.8, cutmix_alpha=1.0, erasing_prob=0.25)
  run = lambda: train.train_step(state, batch, state.params, batch_augment=aug, **kw)[1].compute()
  assert run() == run()  # Same seed and step: the same augmented batch.
