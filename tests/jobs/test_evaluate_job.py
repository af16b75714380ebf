"""mode=evaluate and mode=sweep on a tiny trained digits ViT: files, summaries, one-line errors."""

import json
import os
import subprocess
import sys

import jax
import pytest
import tensorflow as tf

from tests.helpers import tiny_config
from vitprune_jax import jobs, models, parallel, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import evaluate
from vitprune_jax.jobs import common, train

# In-process jobs on one device: 8 simulated devices cost 2.5x the CPU for these tiny models.
pytestmark = pytest.mark.usefixtures('one_device_jobs')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _evaluate_config(config, workdir, *pruners):
  c = config.copy_and_resolve_references()
  c.mode = 'evaluate'
  c.init.vit_dir = workdir
  c.prune.pruners = pruners
  c.eval.throughput_repeats = 1
  c.viz.num_images = 0
  return c


@pytest.mark.slow
def test_comparison_records_table_and_files(tiny_trained_run, tmp_path):
  config, workdir = tiny_trained_run
  names = ('none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity')
  config = _evaluate_config(config, workdir, *names)
  config.prune.r_max, config.prune.alpha = 0.7, 1.0
  config.eval.throughput_repeats = 2
  config.viz.num_images = 2
  config.viz.background_images = 50
  out = jobs.run(config, str(tmp_path))
  saved = json.loads((tmp_path / 'evaluate_results.json').read_text())
  records = saved['records']
  assert [r['pruner'] for r in records] == list(names)
  for r in records:
    assert r['split'] == 'test' and r['num_examples'] == 359 and r['images_per_s'] > 0
  none, cls = records[0], records[3]
  assert none['tokens_per_layer'] == [17.0, 17.0] and none['gflops_ratio'] == pytest.approx(1.0)
  assert cls['tokens_per_layer'] == [
    11.0,
    4.0,
  ]  # 16 patches: floor(16*0.65)=10, floor(10*0.3)=3; + CLS.
  assert (cls['r_max'], cls['alpha']) == (0.7, 1.0) and none['r_max'] is None
  assert records[1]['tokens_per_layer'] == cls['tokens_per_layer']  # random: same counts.
  assert saved['test_accuracy'] == none['accuracy'] == out['test_accuracy']
  # The unpruned accuracy agrees with what training reported for the same checkpoint.
  trained = json.loads(open(os.path.join(workdir, 'train_results.json')).read())
  assert none['accuracy'] == pytest.approx(trained['test_accuracy'], abs=1e-9)
  table = (tmp_path / 'evaluate_results.md').read_text()
  assert '| cls_attention | 0.7 | 1.0 |' in table and '1 MAC = 2 FLOPs' in table
  assert (tmp_path / 'evaluate_results.csv').read_text().count('\n') == 7
  assert (tmp_path / 'pruning_visualization.png').stat().st_size > 1000
  shares = saved['background_share']
  assert list(shares) == list(names[1:])  # Every scoring pruner, none excluded.
  assert all(0 <= v <= 1 for d in shares.values() for v in d['kept_background_share'])
  assert 'Share of the kept patches that are background (50 test images' in table


def test_tome_and_evit_by_name_with_their_options(tiny_trained_run, tmp_path):
  config, workdir = tiny_trained_run
  c = _evaluate_config(config, workdir, 'none', 'tome', 'evit')
  c.prune.tome_r, c.prune.evit_keep_rate, c.prune.evit_layers = 3, 0.5, (0,)
  c.viz.pruner, c.viz.num_images = 'tome', 2  # Which patches merged into which token.
  records = jobs.run(c, str(tmp_path))['records']
  assert (tmp_path / 'pruning_visualization.png').stat().st_size > 1000
  none, tome, evit = records
  # 17 tokens: ToMe merges 3 per block; EViT keeps ceil(0.5 * 16) = 8 patches + CLS + the fused one.
  assert tome['tokens_per_layer'] == [14.0, 11.0] and tome['r'] == 3
  assert evit['tokens_per_layer'] == [10.0, 10.0] and evit['keep_rate'] == 0.5
  assert tome['gflops'] < none['gflops'] and evit['gflops'] < none['gflops']
  assert all(0.0 <= r['accuracy'] <= 1.0 for r in records)
  c.mode, c.sweep.pruner = 'sweep', 'tome'
  with pytest.raises(UserError, match="sweep.pruner='tome': the sweep is over seed 002"):
    jobs.run(c, str(tmp_path / 'sweep'))


def test_mask_execution_gives_the_same_accuracy_as_compact(tiny_trained_run, tmp_path):
  config, workdir = tiny_trained_run
  results = {}
  for execution in ('mask', 'compact'):
    c = _evaluate_config(config, workdir, 'cls_attention')
    c.prune.execution = execution
    results[execution] = jobs.run(c, str(tmp_path / execution))['records'][0]
  assert results['mask']['accuracy'] == results['compact']['accuracy']
  assert results['mask']['tokens_per_layer'] == results['compact']['tokens_per_layer']
  assert results['mask']['execution'] == 'mask'


@pytest.mark.slow
def test_sweep_selects_on_validation_and_plots(tiny_trained_run, tmp_path):
  config, workdir = tiny_trained_run
  config = config.copy_and_resolve_references()
  config.mode = 'sweep'
  config.init.vit_dir = workdir
  config.sweep.alphas = (1.0, 2.0)
  config.sweep.r_maxes = (0.3, 0.9)
  config.sweep.tolerance = 1.0  # Everything qualifies: the cheapest schedule must be chosen.
  config.eval.throughput_repeats = 1
  summary = jobs.run(config, str(tmp_path))
  assert summary['split'] == 'validation' and summary['unpruned']['split'] == 'validation'
  saved = json.loads((tmp_path / 'sweep_results.json').read_text())
  schedules = saved['records'][1:]
  assert len(schedules) == 4 and all(r['split'] == 'validation' for r in schedules)
  cheapest = min(schedules, key=lambda r: r['gflops'])
  chosen = summary['selected']
  assert (chosen['alpha'], chosen['r_max']) == (cheapest['alpha'], cheapest['r_max']) == (1.0, 0.9)
  assert any(r['pareto'] for r in schedules)
  final = summary['selected_on_eval_split']
  assert [r['pruner'] for r in final] == ['none', 'random', 'greedy', 'cls_attention']
  assert all(r['split'] == 'test' for r in final)
  assert (tmp_path / 'sweep_pareto.png').stat().st_size > 1000


def test_unknown_pruner_in_config(tiny_trained_run, tmp_path):
  config, workdir = tiny_trained_run
  config = _evaluate_config(config, workdir, 'none', 'magic')
  with pytest.raises(UserError, match="Unknown pruner 'magic' in --config.prune.pruners"):
    jobs.run(config, str(tmp_path))
  assert not tmp_path.joinpath('evaluate_results.json').exists()


def test_pruned_training_from_an_epoch(base_config, tmp_path):
  config = tiny_config(base_config, epochs=2)
  config.train.pruner = 'cls_attention'
  config.train.prune_from_epoch = 1
  config.prune.r_max, config.prune.alpha = 0.8, 1.0
  _, results = train.train_and_evaluate(config, str(tmp_path))
  assert results['train_pruner'] == 'cls_attention'
  assert results['tokens_per_layer_pruned'] == [4.0]  # 1 layer: floor(16 * 0.2) + CLS.
  # The pruned figure is the best checkpoint's under that pruner, recomputed independently.
  model, params, _ = models.load_vit(str(tmp_path))
  pruner = pruning.make_pruner('cls_attention', model.config, r_max=0.8, alpha=1.0)
  again = evaluate.evaluate_params(
    model,
    params,
    common.split_batches(config, 'test')(),
    mesh=parallel.make_mesh(),
    pruner=pruner,
    rng=jax.random.PRNGKey(0),
  )
  assert again.accuracy == results['test_accuracy_pruned']


@pytest.mark.slow
def test_prune_eval_from_the_cli(tiny_trained_run, tmp_path):
  _, workdir = tiny_trained_run
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  cmd = [
    sys.executable,
    '-m',
    'vitprune_jax.main',
    '--config',
    'configs/digits_prune_eval.py',
    '--workdir',
    str(tmp_path),
    f'--config.init.vit_dir={workdir}',
    '--config.eval.throughput_repeats=1',
    '--config.viz.num_images=0',
  ]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = json.loads((tmp_path / 'evaluate_results.json').read_text())['records']
  assert [r['pruner'] for r in records] == [
    'none',
    'random',
    'greedy',
    'cls_attention',
    'mean_attention',
    'similarity',
  ]
  assert '| similarity |' in proc.stdout


def test_a_remote_workdir_gets_every_file(tiny_trained_run):
  """A gs:// workdir works like a local one: files go through tf.io.gfile (ram:// stands in)."""
  config, workdir = tiny_trained_run
  config = _evaluate_config(config, workdir, 'none', 'cls_attention')
  config.viz.num_images = 2
  remote = 'ram://vitprune/eval'
  jobs.run(config, remote)
  assert sorted(tf.io.gfile.listdir(remote)) == [
    'evaluate_results.csv',
    'evaluate_results.json',
    'evaluate_results.md',
    'pruning_visualization.png',
  ]
  with tf.io.gfile.GFile(f'{remote}/evaluate_results.json') as f:
    assert [r['pruner'] for r in json.load(f)['records']] == ['none', 'cls_attention']
  assert tf.io.gfile.stat(f'{remote}/pruning_visualization.png').length > 1000


def test_reuse_rejects_a_checkpoint_for_other_images(tiny_trained_run):
  config, workdir = tiny_trained_run
  config = config.copy_and_resolve_references()
  mesh = parallel.make_mesh()
  model, _, meta = common.load_vit(config, workdir, mesh)
  assert meta['checkpoint_dir'].endswith('best') and model.config.hidden_size == 16
  config.data.image_size = 16
  with pytest.raises(UserError, match='image_size=8'):
    common.load_vit(config, workdir, mesh)
