"""Evaluation metrics and checkpoint reuse across configs."""
import numpy as np
import pytest

from vitprune_jax import parallel
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import evaluate


def test_classification_metrics_by_hand():
  labels = np.array([0, 0, 1, 1, 2, 2])
  preds = np.array([0, 1, 1, 1, 2, 0])
  m = evaluate.classification_metrics(preds, labels, num_classes=3)
  assert m['accuracy'] == pytest.approx(4 / 6)
  # Per-class F1: class 0: p=1/2, r=1/2 -> 0.5; class 1: p=2/3, r=1 -> 0.8; class 2: p=1, r=1/2 -> 2/3.
  assert m['macro_f1'] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_reuse_rejects_a_checkpoint_for_other_images(tiny_trained_run):
  config, workdir = tiny_trained_run
  config = config.copy_and_resolve_references()
  mesh = parallel.make_mesh()
  model, _, meta = evaluate.load_model_for_reuse(config, workdir, mesh)
  assert meta['checkpoint_dir'].endswith('best') and model.config.hidden_size == 16
  config.dataset.image_size = 16
  with pytest.raises(UserError, match='image_size=8'):
    evaluate.load_model_for_reuse(config, workdir, mesh)
