"""The pruner comparison and the schedule sweep on a tiny trained checkpoint, in-process and from the CLI."""
import json
import os
import subprocess
import sys

import pytest

from vitprune_jax.evaluation import compare, sweep
from vitprune_jax.errors import UserError
from vitprune_jax.training import train
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def trained(tiny_trained_run):
  return tiny_trained_run


def test_comparison_records_table_and_files(trained, tmp_path):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.mode = 'evaluate'
  config.eval.checkpoint_dir = workdir
  config.prune.pruners = ('none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity')
  config.prune.r_max, config.prune.alpha = 0.7, 1.0
  config.prune.throughput_repeats = 2
  config.prune.visualize_images = 2
  out = compare.evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'evaluate_results.json').read_text())
  records = saved['records']
  assert [r['pruner'] for r in records] == list(config.prune.pruners)
  for r in records:
    assert {'pruner', 'accuracy', 'macro_f1', 'gflops', 'images_per_s', 'tokens_per_layer'} <= set(r)
    assert 0 <= r['accuracy'] <= 1 and r['images_per_s'] > 0 and r['num_examples'] == 359
  none, cls = records[0], records[3]
  assert none['tokens_per_layer'] == [17.0, 17.0] and none['gflops_ratio'] == pytest.approx(1.0)
  assert cls['tokens_per_layer'] == [11.0, 4.0]  # 16 patches: floor(16*0.65)=10, floor(10*0.3)=3; + CLS.
  assert cls['gflops'] < none['gflops']
  assert records[1]['tokens_per_layer'] == cls['tokens_per_layer']  # random: same counts.
  assert saved['test_accuracy'] == none['accuracy'] == out['test_accuracy']
  # The unpruned accuracy agrees with what training reported for the same checkpoint.
  trained_results = json.loads(open(os.path.join(workdir, 'train_results.json')).read())
  assert none['accuracy'] == pytest.approx(trained_results['test_accuracy'], abs=1e-9)
  table = (tmp_path / 'evaluate_results.md').read_text()
  assert '| cls_attention | 0.7 | 1.0 |' in table and '1 MAC = 2 FLOPs' in table
  assert (tmp_path / 'evaluate_results.csv').read_text().count('\n') == 7
  assert (tmp_path / 'pruning_visualization.png').stat().st_size > 1000


def test_mask_mode_gives_the_same_accuracy_as_compact(trained, tmp_path):
  config, workdir = trained
  results = {}
  for mode in ('mask', 'compact'):
    c = config.copy_and_resolve_references()
    c.eval.checkpoint_dir = workdir
    c.prune.pruners = ('cls_attention',)
    c.prune.mode = mode
    c.prune.visualize_images = 0
    c.prune.throughput_repeats = 1
    results[mode] = compare.evaluate(c, str(tmp_path / mode))['records'][0]
  assert results['mask']['accuracy'] == results['compact']['accuracy']
  assert results['mask']['tokens_per_layer'] == results['compact']['tokens_per_layer']


def test_sweep_selects_on_validation_and_plots(trained, tmp_path):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.eval.checkpoint_dir = workdir
  config.prune.sweep_alphas = (1.0, 2.0)
  config.prune.sweep_r_maxes = (0.3, 0.9)
  config.prune.sweep_tolerance = 1.0  # Everything qualifies: the cheapest schedule must be chosen.
  config.prune.throughput_repeats = 1
  summary = sweep.sweep(config, str(tmp_path))
  assert summary['split'] == 'validation' and summary['unpruned']['split'] == 'validation'
  saved = json.loads((tmp_path / 'sweep_results.json').read_text())
  schedules = saved['records'][1:]
  assert len(schedules) == 4
  cheapest = min(schedules, key=lambda r: r['gflops'])
  assert (summary['selected']['alpha'], summary['selected']['r_max']) == (cheapest['alpha'], cheapest['r_max'])
  assert any(r['pareto'] for r in schedules)
  final = summary['selected_on_eval_split']
  assert [r['pruner'] for r in final] == ['none', 'random', 'greedy', 'cls_attention']
  assert all(r['split'] == 'test' for r in final)
  assert (tmp_path / 'sweep_pareto.png').stat().st_size > 1000


def test_pareto_front_and_selection():
  recs = [{'accuracy': 0.9, 'gflops': 1.0}, {'accuracy': 0.8, 'gflops': 0.5}, {'accuracy': 0.7, 'gflops': 0.6},
          {'accuracy': 0.95, 'gflops': 2.0}]
  assert sweep.pareto_front(recs) == [0, 1, 3]
  assert sweep.select_schedule(recs, 0.9, 0.1) is recs[1]
  assert sweep.select_schedule(recs, 0.99, 0.001) is None


def test_unknown_pruner_in_config(trained, tmp_path):
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.prune.pruners = ('none', 'magic')
  with pytest.raises(UserError, match="Unknown pruner 'magic'"):
    compare.evaluate(config, str(tmp_path))


def test_pruned_training_from_an_epoch(base_config, tmp_path):
  config = tiny_config(base_config, epochs=2)
  config.prune.train_pruner = 'cls_attention'
  config.prune.prune_from_epoch = 1
  config.prune.r_max, config.prune.alpha = 0.8, 1.0
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['train_pruner'] == 'cls_attention'
  assert results['tokens_per_layer_pruned'] == [4.0]  # 1 layer: floor(16 * 0.2) + CLS.
  assert 0 <= results['test_accuracy_pruned'] <= 1


def test_prune_eval_from_the_cli(trained, tmp_path):
  _, workdir = trained
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'vitprune_jax.main', '--config', 'configs/digits_prune_eval.py', '--workdir',
       str(tmp_path), f'--config.eval.checkpoint_dir={workdir}', '--config.prune.throughput_repeats=1',
       '--config.prune.visualize_images=0'], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = json.loads((tmp_path / 'evaluate_results.json').read_text())['records']
  assert [r['pruner'] for r in records] == ['none', 'random', 'greedy', 'cls_attention', 'mean_attention',
                                            'similarity']
  assert '| similarity |' in proc.stdout


def test_a_remote_workdir_gets_every_file(trained):
  """A gs:// workdir works like a local one: results and pictures go through tf.io.gfile (ram:// stands in)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config, workdir = trained
  config = config.copy_and_resolve_references()
  config.eval.checkpoint_dir = workdir
  config.prune.pruners = ('none', 'cls_attention')
  config.prune.throughput_repeats = 1
  config.prune.visualize_images = 2
  remote = 'ram://vitprune/eval'
  records = compare.evaluate(config, remote)['records']
  assert sorted(tf.io.gfile.listdir(remote)) == ['evaluate_results.csv', 'evaluate_results.json',
                                                 'evaluate_results.md', 'pruning_visualization.png']
  with tf.io.gfile.GFile(f'{remote}/evaluate_results.json') as f:
    assert [r['pruner'] for r in json.load(f)['records']] == ['none', 'cls_attention']
  sweep.plot(records[1:], records[0], [0], f'{remote}/sweep_pareto.png', 'remote')
  for name in ('pruning_visualization.png', 'sweep_pareto.png'):
    assert tf.io.gfile.stat(f'{remote}/{name}').length > 1000
