"""The pruner comparison's records, table and throughput, and the sweep's selection and figures,
on a tiny ViT and explicit numpy batches. (The `evaluate` and `sweep` jobs: tests/jobs/.)"""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import figure

from vitprune_jax import parallel, pruning
from vitprune_jax.evaluation import compare, sweep, visualize
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
NAMES = ('none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity')
KEYS = [
  'pruner',
  'r_max',
  'alpha',
  'execution',
  'split',
  'accuracy',
  'macro_f1',
  'loss',
  'gflops',
  'gflops_kept',
  'eval_time_s',
  'tokens_per_layer',
  'num_examples',
  'gflops_ratio',
]
# FLOPs per image (1 MAC = 2 FLOPs) of CFG: embedding 2*16*4*1*16 = 2048, head 2*16*4 = 128, and a
# block on n tokens 2*(2048n + 32n^2) + 64*32n + 5*2n^2 + 2*5*16n = 6304n + 74n^2 (128554 for
# n = 17, 78298 for n = 11). Unpruned: blocks on 17, 17; cls_attention: on 17, 11.
FULL_FLOPS = 2048 + 2 * 128554 + 128  # 259284
PRUNED_FLOPS = 2048 + 128554 + 78298 + 128  # 209028


@pytest.fixture(scope='module')
def model_params():
  model = vit.VisionTransformer(CFG)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))['params']
  # A random head, so that pruning changes predictions (the init head is zero).
  head = {'kernel': jax.random.normal(jax.random.PRNGKey(2), (16, 4)), 'bias': jnp.zeros(4)}
  return model, dict(params, head=head)


class Batches:
  """Two global batches of 8 (the last 3 examples padding), counting how often they are read."""

  def __init__(self):
    rng = np.random.default_rng(0)
    self.data = [
      {
        'image': rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
        'label': rng.integers(0, 4, 8).astype(np.int32),
        'mask': np.array([1] * 8 if i == 0 else [1] * 5 + [0] * 3, np.float32),
      }
      for i in range(2)
    ]
    self.calls = 0

  def __call__(self):
    self.calls += 1
    return iter(self.data)


def named_pruners(names):
  return [
    (n, None if n == 'none' else pruning.make_pruner(n, CFG, r_max=0.7, alpha=1.0)) for n in names
  ]


def test_comparison_records_and_table(model_params):
  model, params = model_params
  batches = Batches()
  records = compare.compare_pruners(
    model,
    params,
    named_pruners(NAMES),
    batches,
    mesh=parallel.make_mesh(),
    execution='compact',
    rng=jax.random.PRNGKey(0),
    throughput_repeats=2,
  )
  assert batches.calls == len(NAMES) + 1  # One pass per pruner, one for the throughput batch.
  assert [r['pruner'] for r in records] == list(NAMES)
  for r in records:
    assert list(r) == KEYS + ['images_per_s', 'speedup']
    assert (r['r_max'], r['alpha'], r['split'], r['execution']) == (None, None, None, 'compact')
    assert r['num_examples'] == 13 and r['images_per_s'] > 0
  none, random, greedy, cls = records[0], records[1], records[2], records[3]
  assert none['tokens_per_layer'] == [17.0, 17.0] and none['gflops_ratio'] == pytest.approx(1.0)
  assert none['gflops'] == pytest.approx(FULL_FLOPS / 1e9) and none['speedup'] == 1.0
  assert cls['tokens_per_layer'] == [11.0, 4.0]  # floor(16*0.65)=10, floor(10*0.3)=3; + CLS.
  assert cls['gflops'] == cls['gflops_kept'] == pytest.approx(PRUNED_FLOPS / 1e9)
  assert cls['gflops_ratio'] == pytest.approx(PRUNED_FLOPS / FULL_FLOPS)
  assert random['tokens_per_layer'] == cls['tokens_per_layer']  # random: same counts.
  # greedy: the most tokens after block 0 within cls_attention's FLOPs is exactly 11.
  assert greedy['tokens_per_layer'] == [11.0, 11.0]
  assert greedy['gflops'] == pytest.approx(cls['gflops'])
  # Pruning changed the predictions (the random head reads the CLS token).
  assert none['accuracy'] != cls['accuracy'] or none['loss'] != cls['loss']
  for r in records[1:]:
    r['r_max'], r['alpha'] = 0.7, 1.0  # The caller fills in the schedule.
  table = compare.markdown_table(records, 'tiny')
  assert '| cls_attention | 0.7 | 1.0 |' in table and '1 MAC = 2 FLOPs' in table
  assert table.startswith('### tiny\n') and table.count('\n') == 4 + len(NAMES)


def test_without_throughput_repeats_nothing_is_timed(model_params):
  model, params = model_params
  batches = Batches()
  records = compare.compare_pruners(
    model,
    params,
    named_pruners(('none',)),
    batches,
    mesh=parallel.make_mesh(),
    execution='compact',
    rng=jax.random.PRNGKey(0),
  )
  assert batches.calls == 1 and list(records[0]) == KEYS


def test_mask_execution_gives_the_same_accuracy_as_compact(model_params):
  model, params = model_params
  results = {}
  for execution in pruning.EXECUTIONS:
    results[execution] = compare.compare_pruners(
      model,
      params,
      named_pruners(('cls_attention',)),
      Batches(),
      mesh=parallel.make_mesh(),
      execution=execution,
      rng=jax.random.PRNGKey(0),
    )[0]
  mask, compact = results['mask'], results['compact']
  assert (mask['execution'], compact['execution']) == ('mask', 'compact')
  assert mask['accuracy'] == compact['accuracy']
  assert mask['loss'] == pytest.approx(compact['loss'], abs=1e-5)
  assert mask['tokens_per_layer'] == compact['tokens_per_layer'] == [11.0, 4.0]
  # Mask execution: the GFLOPs of the tokens kept, here the budget's.
  assert mask['gflops'] == pytest.approx(compact['gflops'])


def test_unknown_execution(model_params):
  model, params = model_params
  with pytest.raises(ValueError, match='execution must be one of'):
    compare.compare_pruners(
      model,
      params,
      [],
      Batches(),
      mesh=parallel.make_mesh(),
      execution='fast',
      rng=jax.random.PRNGKey(0),
    )


def test_markdown_table_by_hand():
  records = [
    {
      'pruner': 'none',
      'r_max': None,
      'alpha': None,
      'accuracy': 0.9,
      'macro_f1': 0.85,
      'gflops': 0.25,
      'gflops_ratio': 1.0,
      'eval_time_s': 1.26,
      'tokens_per_layer': [17.0, 17.0],
      'images_per_s': 1000.4,
      'speedup': 1.0,
    },
    {
      'pruner': 'cls_attention',
      'r_max': 0.7,
      'alpha': 1.0,
      'accuracy': 0.8512,
      'macro_f1': 0.8,
      'gflops': 0.2,
      'gflops_ratio': 0.8,
      'eval_time_s': 1.0,
      'tokens_per_layer': [11.0, 4.5],
    },  # No throughput measured.
  ]
  assert compare.markdown_table(records, 'Title') == (
    '### Title\n\n'
    '| pruner | r_max | alpha | accuracy (%) | macro-F1 | GFLOPs/img (1 MAC = 2 FLOPs) | '
    'GFLOPs vs unpruned | images/s | speedup | eval time (s) | tokens kept after each layer |\n'
    '|---|---|---|---|---|---|---|---|---|---|---|\n'
    '| none | - | - | 90.00 | 0.8500 | 0.2500 | 1.00 | 1000 | 1.00x | 1.3 | 17, 17 |\n'
    '| cls_attention | 0.7 | 1.0 | 85.12 | 0.8000 | 0.2000 | 0.80 | - | - | 1.0 | 11, 4.5 |\n'
  )


def test_throughput_rounds_rotate_the_first_variant():
  assert compare.timing_order(3, 0) == [0, 1, 2]
  assert compare.timing_order(3, 1) == [1, 2, 0]
  assert compare.timing_order(3, 5) == [2, 0, 1]
  assert sorted(compare.timing_order(4, r)[0] for r in range(4)) == [0, 1, 2, 3]


def test_measure_throughput_times_every_variant(model_params):
  model, params = model_params
  images = jnp.zeros((8, 8, 8, 1))
  ips = compare.measure_throughput(
    model,
    params,
    [None, *dict(named_pruners(['greedy'])).values()],
    'compact',
    images,
    2,
    jax.random.PRNGKey(0),
  )
  assert len(ips) == 2 and all(v > 0 for v in ips)


def test_pareto_front_and_selection():
  recs = [
    {'accuracy': 0.9, 'gflops': 1.0},
    {'accuracy': 0.8, 'gflops': 0.5},
    {'accuracy': 0.7, 'gflops': 0.6},
    {'accuracy': 0.95, 'gflops': 2.0},
  ]
  assert sweep.pareto_front(recs) == [0, 1, 3]
  assert sweep.select_schedule(recs, 0.9, 0.1) is recs[1]
  assert sweep.select_schedule(recs, 0.99, 0.001) is None


def png_size(fig: figure.Figure) -> int:
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=80)
  return len(png.getvalue())


def test_sweep_plot_is_a_figure():
  recs = [
    {'accuracy': 0.9, 'gflops': 1.0, 'alpha': 1.0, 'r_max': 0.3},
    {'accuracy': 0.8, 'gflops': 0.5, 'alpha': 2.0, 'r_max': 0.9},
    {'accuracy': 0.7, 'gflops': 0.6, 'alpha': 1.0, 'r_max': 0.9},
  ]
  fig = sweep.plot(recs, {'accuracy': 0.92, 'gflops': 1.5}, [0, 1], 'sweep title')
  assert isinstance(fig, figure.Figure)
  (ax,) = fig.axes
  assert ax.get_title() == 'sweep title'
  (front,) = ax.get_lines()  # The Pareto front, by GFLOPs: (0.5, 80 %), (1.0, 90 %).
  np.testing.assert_allclose(front.get_xydata(), [[0.5, 80.0], [1.0, 90.0]])
  assert [t.get_text() for t in ax.texts] == ['a=2.0, r=0.9', 'a=1.0, r=0.3']
  assert png_size(fig) > 1000


def test_kept_masks_and_their_figure(model_params):
  model, params = model_params
  pruner = pruning.make_pruner('cls_attention', CFG, r_max=0.7, alpha=1.0)
  images = np.random.default_rng(0).normal(size=(8, 8, 8, 1)).astype(np.float32)
  masks = visualize.kept_masks(model, params, jnp.asarray(images), pruner, jax.random.PRNGKey(0))
  assert masks.shape == (8, 2, 17)
  np.testing.assert_array_equal(masks.sum(-1), np.tile([11, 4], (8, 1)))
  assert np.all(masks[:, :, 0] == 1)  # CLS.
  assert np.all(masks[:, 1] <= masks[:, 0])  # A dropped token stays dropped.
  fig = visualize.kept_patches_figure(images[:2], masks[:2], CFG, 'kept patches')
  assert isinstance(fig, figure.Figure) and len(fig.axes) == 2 * 3
  assert [ax.get_title() for ax in fig.axes[:3]] == [
    'input',
    'after block 0\n11 tokens',
    'after block 1\n4 tokens',
  ]
  assert fig.texts[0].get_text() == 'kept patches'
  assert png_size(fig) > 1000
