"""mode=train: a whole tiny run, exact resume, clean failures that keep checkpoints."""

import json
import os
import re

import jax
import numpy as np
import pytest

from configs import default as default_config
from tests.helpers import tiny_config
from vitprune_jax import checkpoints, models, parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import evaluate
from vitprune_jax.jobs import common, train
from vitprune_jax.models import vit

# In-process jobs on one device: 8 simulated devices cost 2.5x the CPU for these tiny models.
pytestmark = pytest.mark.usefixtures('one_device_jobs')


def _params_of(workdir, step):
  ckpt = checkpoints.Checkpointer(workdir, read_only=True)
  items = ckpt.latest.restore(step)
  return items['params']


def test_tiny_run_writes_results_and_checkpoints(base_config, tmp_path):
  config = tiny_config(base_config)
  state, results = train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'train_results.json').read_text())
  assert saved['test_accuracy'] == results['test_accuracy']
  assert saved['split'] == 'test' and saved['num_examples'] == 359
  # The reported figure is that of the best checkpoint on disk, recomputed here independently.
  model, params, meta = models.load_vit(str(tmp_path))
  assert meta['checkpoint_step'] == saved['best_step']
  again = evaluate.evaluate_params(
    model,
    params,
    common.split_batches(config, 'test')(),
    mesh=parallel.make_mesh(),
    rng=jax.random.PRNGKey(0),
  )
  assert again.accuracy == saved['test_accuracy'] and again.num_examples == 359
  assert int(state.step) == saved['steps']
  assert saved['steps'] == 2 * (1258 // 128)
  assert os.listdir(tmp_path / 'best') and os.listdir(tmp_path / 'checkpoints')
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path))


def test_interrupted_and_resumed_run_matches_uninterrupted(base_config, tmp_path):
  """Halting mid-epoch (step 5 of 9 in epoch 0), then rerunning, ends with bit-identical params."""
  straight = tiny_config(base_config.copy_and_resolve_references())
  train.train_and_evaluate(straight, str(tmp_path / 'a'))

  halted = tiny_config(base_config.copy_and_resolve_references())
  halted.train.halt_after_steps = 5
  _, out = train.train_and_evaluate(halted, str(tmp_path / 'b'))
  assert out == {'halted_at_step': 5, 'total_steps': 18}
  assert not (tmp_path / 'b' / 'train_results.json').exists()
  halted.train.halt_after_steps = 0
  _, resumed = train.train_and_evaluate(halted, str(tmp_path / 'b'))
  assert resumed['resumed_from_step'] == 5

  a, b = _params_of(str(tmp_path / 'a'), 18), _params_of(str(tmp_path / 'b'), 18)
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_resume_with_a_different_model_fails_cleanly_and_keeps_checkpoints(base_config, tmp_path):
  config = tiny_config(base_config)
  config.train.halt_after_steps = 3
  train.train_and_evaluate(config, str(tmp_path))
  before = sorted(os.listdir(tmp_path / 'checkpoints'))
  config.model.hidden_size = 32
  with pytest.raises(checkpoints.CheckpointError, match=r'does not match the model: .*shape'):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == before


def test_nan_loss_stops_with_a_clear_error(base_config, tmp_path):
  config = tiny_config(base_config)
  config.train.learning_rate = 1e30
  config.train.grad_clip_norm = 1e30
  with pytest.raises(UserError, match='loss became nan'):
    train.train_and_evaluate(config, str(tmp_path))


def test_batch_larger_than_dataset_is_a_clear_error(base_config, tmp_path):
  config = tiny_config(base_config)
  config.train.batch_size = 4096
  with pytest.raises(UserError, match='exceeds'):
    train.train_and_evaluate(config, str(tmp_path))


def test_token_distillation_refuses_merging_pruners_in_one_line():
  config = default_config.get_config()
  config.distill.teacher_dir = '/nonexistent/teacher'
  config.distill.token_weight = 0.5
  cfg = vit.ViTConfig(10, 16, 4, 32, 2, 4, 64, num_channels=1)
  similarity = pruning.at_capacities('similarity', cfg, (9, 5))
  for pruner in (pruning.make_pruner('tome', cfg, r=2), pruning.with_merging(similarity)):
    with pytest.raises(UserError, match=f'which {re.escape(pruner.name)} merges away'):
      train.distillation(config, None, pruner, 'compact')
