"""Evaluation metrics by hand, on explicit numpy batches (padding included)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitprune_jax import parallel, pruning
from vitprune_jax.evaluation import evaluate
from vitprune_jax.models import vit

CFG = vit.ViTConfig(
  num_classes=4,
  image_size=8,
  patch_size=2,
  hidden_size=16,
  num_layers=2,
  num_heads=2,
  mlp_dim=32,
  num_channels=1,
)  # 16 patches + CLS.
# Two global batches of 8; the last 4 examples of the second are padding (mask 0), labelled 0 so
# that counting them would raise the accuracy.
LABELS = [np.array([0, 0, 1, 2, 3, 0, 1, 0]), np.array([0, 1, 2, 3, 0, 0, 0, 0])]
MASKS = [np.ones(8), np.array([1, 1, 1, 1, 0, 0, 0, 0])]


def test_classification_metrics_by_hand():
  labels = np.array([0, 0, 1, 1, 2, 2])
  preds = np.array([0, 1, 1, 1, 2, 0])
  m = evaluate.classification_metrics(preds, labels, num_classes=3)
  assert m['accuracy'] == pytest.approx(4 / 6)
  # Per-class F1: class 0: p=1/2, r=1/2 -> 0.5; class 1: p=2/3, r=1 -> 0.8;
  # class 2: p=1, r=1/2 -> 2/3.
  assert m['macro_f1'] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def constant_model():
  """A ViT whose head ignores the tokens: logits (ln 2, 0, 0, 0), so softmax = (2, 1, 1, 1) / 5."""
  model = vit.VisionTransformer(CFG)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))['params']
  head = {'kernel': jnp.zeros((16, 4)), 'bias': jnp.array([math.log(2.0), 0.0, 0.0, 0.0])}
  return model, dict(params, head=head)


def batches():
  rng = np.random.default_rng(0)
  for labels, mask in zip(LABELS, MASKS):
    yield {
      'image': rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
      'label': labels.astype(np.int32),
      'mask': mask.astype(np.float32),
    }


@pytest.mark.parametrize('name', ['none', 'cls_attention'])
@pytest.mark.parametrize('execution', pruning.EXECUTIONS)
def test_evaluate_params_by_hand(name, execution):
  model, params = constant_model()
  pruner = None if name == 'none' else pruning.make_pruner(name, CFG, r_max=0.7, alpha=1.0)
  result = evaluate.evaluate_params(
    model,
    params,
    batches(),
    mesh=parallel.make_mesh(),
    pruner=pruner,
    execution=execution,
    rng=jax.random.PRNGKey(0),
  )
  assert isinstance(result, evaluate.EvalResult)
  # Every prediction is class 0. 12 real examples: 5 of class 0, 3 of 1, 2 of 2, 2 of 3.
  assert result.num_examples == 12
  assert result.accuracy == pytest.approx(5 / 12)
  # Class 0: precision 5/12, recall 1 -> F1 = 10/17; classes 1-3: F1 0.
  assert result.macro_f1 == pytest.approx(10 / 17 / 4)
  assert result.loss == pytest.approx((5 * math.log(5 / 2) + 7 * math.log(5)) / 12, rel=1e-6)
  # 16 patches, r_max=0.7, alpha=1: floor(16 * 0.65) = 10, floor(10 * 0.3) = 3; + CLS.
  expected = [17, 17] if pruner is None else [11, 4]
  assert result.tokens_per_layer == expected
  np.testing.assert_array_equal(result.kept_counts, np.tile(expected, (12, 1)))
  assert result.compile_time_s > 0


def test_evaluate_params_without_batches():
  model, params = constant_model()
  with pytest.raises(ValueError, match='no batches'):
    evaluate.evaluate_params(
      model, params, iter([]), mesh=parallel.make_mesh(), rng=jax.random.PRNGKey(0)
    )


def test_unknown_execution():
  with pytest.raises(ValueError, match='execution must be one of'):
    evaluate.eval_fn(constant_model()[0], None, 'fast')
