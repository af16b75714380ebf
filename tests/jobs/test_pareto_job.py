"""mode='pareto' on a tiny trained digits ViT and a budget-mode policy: matched capacities at every
level, GFLOPs from the tokens that ran, random over seeds, the paired test, files, clear errors."""

import json
import types

import pytest

from vitprune_jax import jobs, models, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import finetune, pareto, train_policy
from vitprune_jax.models import vit

pytestmark = pytest.mark.usefixtures('one_device_jobs')


def _policy(config, vit_dir, workdir, action_mode, merge_dropped=False):
  c = config.copy_and_resolve_references()
  c.game.merge_dropped = merge_dropped
  c.mode = 'train_policy'
  c.init.vit_dir = vit_dir
  c.game.action_mode = action_mode
  c.game.budget_range = (0.3, 0.9)
  c.deploy.budgets = (0.6,)
  c.deploy.random_seeds = 2
  c.ppo.num_envs = 16
  c.ppo.num_updates = 2
  c.ppo.checkpoint_every_steps = 2
  c.eval.throughput_repeats = 0
  train_policy.run(c, workdir)
  return workdir


@pytest.mark.slow
def test_pareto_runs_every_method_at_the_same_capacities(tiny_trained_run, tmp_path):
  config, vit_dir = tiny_trained_run
  policy_dir = _policy(config, vit_dir, str(tmp_path / 'policy'), 'budget')
  merge_dir = _policy(config, vit_dir, str(tmp_path / 'merge'), 'budget', merge_dropped=True)
  c = config.copy_and_resolve_references()
  c.mode = 'pareto'
  c.init.vit_dir = vit_dir
  c.init.policy_dirs = (policy_dir, merge_dir)
  c.pareto.levels = (0.9, 0.75)
  c.pareto.drop_merge = True
  c.pareto.steer_weights = (0.0, 1.0)
  c.deploy.random_seeds = 3
  c.eval.throughput_repeats = 1
  out = jobs.run(c, str(tmp_path / 'pareto'))
  saved = json.loads((tmp_path / 'pareto' / 'pareto.json').read_text())
  assert (tmp_path / 'pareto' / 'pareto.png').stat().st_size > 0
  records = saved['records']
  methods = ['none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity']
  methods += ['random+merge', 'cls_attention+merge', 'mean_attention+merge', 'similarity+merge']
  methods += ['tome', 'evit', 'mappo', 'mappo+merge', 'mappo+merge (trained)']
  steered = ['tome+cls_attention', 'tome+mean_attention', 'tome+similarity', 'tome+mappo']
  methods += steered + ['tome+mappo+merge (trained)']
  assert [r['method'] for r in records] == methods + methods[1:]
  families = {r['method']: r['family'] for r in records}
  assert families['random'] == 'random' and families['mappo'] == 'learned'
  assert families['similarity'] == 'heuristic' and families['none'] == 'none'
  assert families['tome'] == families['evit'] == families['similarity+merge'] == 'merging'
  assert families['random+merge'] == 'random' and families['mappo+merge'] == 'learned'
  assert families['mappo+merge (trained)'] == 'learned'
  assert families['tome+similarity'] == 'merging' and families['tome+mappo'] == 'learned'
  model, _, _ = models.load_vit(vit_dir)
  cfg: vit.ViTConfig = model.config
  full = pruning.gflops(cfg, [cfg.num_tokens] * cfg.num_layers)
  for level in (0.9, 0.75):
    rows = [r for r in records if r['level'] == level]
    caps = rows[0]['capacities']
    merge_caps = next(r for r in rows if r['method'] == 'random+merge')['capacities']
    rows_steered = [r for r in rows if r['method'].startswith('tome+')]
    for r in rows:
      # GFLOPs of what ran: recomputed from the tokens each layer kept, not from the budget, the
      # merge priced for merging methods.
      steer = r['method'].startswith('tome+')
      drop_merge = '+merge' in r['method'] and not steer
      merge = 'drop_merge' if drop_merge else (r['method'] if r['family'] == 'merging' else None)
      merge = 'tome' if steer else merge
      ran = pruning.gflops(cfg, r['tokens_per_layer'], merge) / full
      assert r['gflops_ratio'] == pytest.approx(ran)
      assert r['gflops_ratio'] <= level + 1e-9
      assert r['finetuned'] is False and r['images_per_s'] > 0
      if drop_merge:  # One budget for every drop-merge variant, at no more GFLOPs than caps.
        assert r['capacities'] == merge_caps and r['tokens_per_layer'] == pytest.approx(merge_caps)
      elif steer:  # ToMe's counts at its r, and the weight most accurate on validation.
        tome = next(t for t in rows if t['method'] == 'tome')
        assert r['tokens_per_layer'] == tome['tokens_per_layer']
        assert r['options']['r'] == tome['options']['r']
        for weight, tried in zip(r['options']['steer_weight'], r['options']['select_accuracy']):
          assert tried[str(weight)] == max(tried.values()) and set(tried) == {'0.0', '1.0'}
          # Weight 0 is ToMe, whatever steers it.
          assert tried['0.0'] == rows_steered[0]['options']['select_accuracy'][0]['0.0']
      elif r['family'] == 'merging':  # Their own counts.
        assert r['tokens_per_layer'] == pytest.approx(r['capacities'])
      elif r['method'] != 'greedy':  # Greedy: one shot after block 0 at no more GFLOPs.
        assert r['capacities'] == caps and r['tokens_per_layer'] == pytest.approx(caps)
    random = next(r for r in rows if r['method'] == 'random')
    assert random['seeds'] == 3 and len(random['accuracy_seeds']) == 3 and random['ci95'] >= 0
    assert next(r for r in rows if r['method'] == 'random+merge')['seeds'] == 3
  tests = saved['paired_tests']
  assert [(t['level'], t['against']) for t in tests] == [
    (level, family) for level in (0.9, 0.75) for family in ('heuristic', 'merging')
  ]
  learned = ('mappo', 'mappo+merge', 'mappo+merge (trained)', 'tome+mappo')
  learned += ('tome+mappo+merge (trained)',)
  assert all(t['learned'] in learned and 0 <= t['p_value'] <= 1 for t in tests)
  assert saved['git_commit'] is None or len(saved['git_commit']) == 40
  assert saved['config']['pareto']['levels'] == [0.9, 0.75]
  assert out['points'] == [0]

  # A free-mode policy has no budget to run at a level: one clear line.
  free_dir = _policy(config, vit_dir, str(tmp_path / 'free'), 'free')
  c.init.policy_dirs = (free_dir,)
  with pytest.raises(UserError, match='free-mode mappo policy'):
    pareto.run(c, str(tmp_path / 'bad'))


@pytest.mark.slow
def test_finetune_gives_merging_methods_and_every_policy_their_own_copy(tiny_trained_run, tmp_path):
  config, vit_dir = tiny_trained_run
  policy_dir = _policy(config, vit_dir, str(tmp_path / 'policy'), 'budget')
  merge_dir = _policy(config, vit_dir, str(tmp_path / 'merge'), 'budget', merge_dropped=True)
  ft = config.copy_and_resolve_references()
  ft.mode = 'finetune'
  ft.init.vit_dir = vit_dir
  ft.init.policy_dirs = (policy_dir, merge_dir)
  ft.deploy.budgets = (0.6,)
  ft.finetune.methods = ('similarity', 'tome', 'similarity+merge', 'policy', 'tome+similarity')
  ft.finetune.methods += ('tome+policy',)
  ft.finetune.steer_weights = (0.0, 2.0)
  ft.deploy.random_seeds = 1
  ft.train.num_epochs = 1
  ft.train.prune_from_epoch = 0
  ft.eval.throughput_repeats = 0
  out = finetune.run(ft, str(tmp_path / 'ft'))
  records = out['records']
  names = [r['pruner'] for r in records]
  trained_merge = f'mappo+merge (trained)@b={out["drop_merge_budget"]:g}'
  policy_names = ['mappo@b=0.6', trained_merge]
  assert names == ['similarity', 'tome', 'similarity+merge'] + policy_names + [
    'tome+similarity',
    'tome+mappo@b=0.6',
    f'tome+{trained_merge}',
  ]
  assert [r['method'] for r in records] == [
    'similarity',
    'tome',
    'similarity+merge',
    'policy',
    'policy_1',
    'tome+similarity',
    'tome+policy',
    'tome+policy_1',
  ]
  assert [r['family'] for r in records] == ['heuristic'] + ['merging'] * 2 + ['learned'] * 2 + [
    'merging',
    'learned',
    'learned',
  ]
  model, _, _ = models.load_vit(vit_dir)
  cfg: vit.ViTConfig = model.config
  full = pruning.gflops(cfg, [cfg.num_tokens] * cfg.num_layers)
  level = out['capacities_gflops_ratio']
  assert level == pytest.approx(pruning.gflops(cfg, out['capacities']) / full)
  assert out['drop_merge_budget'] < 0.6
  tome = records[1]
  for r in records:
    merge = 'drop_merge' if '+merge' in r['pruner'] else None
    merge = 'tome' if r['method'].startswith('tome') else merge
    if r['method'].startswith('tome+'):  # ToMe's r, the weight most accurate on validation.
      assert r['tokens_per_layer'] == tome['tokens_per_layer']
      tried = r['options']['validation_accuracy']
      assert set(tried) == {'0.0', '2.0'} and r['options']['r'] == tome['options']['r']
      assert tried[str(r['options']['steer_weight'])] == max(tried.values())
    ran = pruning.gflops(cfg, r['tokens_per_layer'], merge) / full
    assert r['gflops_ratio'] == pytest.approx(ran) and r['gflops_ratio'] <= level + 1e-9
    assert r['finetuned'] and r['trained_on'] == 'compact'
    # Each trained its own copy with its own pruning (merging in the loop).
    run = json.loads((tmp_path / 'ft' / r['method'] / 'train_results.json').read_text())
    assert run['tokens_per_layer_pruned'] == pytest.approx(r['tokens_per_layer'])
  assert records[0]['tokens_per_layer'] == pytest.approx(out['capacities'])
  assert records[0]['gflops_ratio'] == pytest.approx(level)
  tests = out['paired_tests']
  assert [t['against'] for t in tests] == ['heuristic', 'merging']
  assert tests[0]['baseline'] == 'similarity'
  assert tests[1]['baseline'] in ('tome', 'similarity+merge', 'tome+similarity')
  saved = json.loads((tmp_path / 'ft' / 'finetune_comparison.json').read_text())
  assert 'correct' not in saved['records'][0] and saved['paired_tests'] == tests

  # Drop-merge needs a budget schedule: with a free-mode policy first, one clear line.
  ft.init.policy_dirs = (_policy(config, vit_dir, str(tmp_path / 'free'), 'free'),)
  ft.finetune.methods = ('similarity+merge',)
  with pytest.raises(UserError, match='drop-merge methods need a budget-mode first policy'):
    finetune.run(ft, str(tmp_path / 'bad'))
  ft.init.policy_dirs = (ft.init.policy_dirs[0], policy_dir)
  ft.finetune.methods = ('policy',)
  with pytest.raises(UserError, match='fine-tune it with budget-mode policies of one schedule'):
    finetune.run(ft, str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad' / 'policy').exists()


def test_drop_merge_is_needed_by_merge_rules_and_merge_trained_policies_however_used():
  merging = types.SimpleNamespace(merge_dropped=True)
  dropping = types.SimpleNamespace(merge_dropped=False)
  assert finetune.needs_drop_merge(('similarity+merge',), [dropping])
  assert finetune.needs_drop_merge(('policy',), [dropping, merging])
  assert finetune.needs_drop_merge(('tome+policy',), [dropping, merging])  # Missed at c8cc220.
  assert not finetune.needs_drop_merge(('tome+policy', 'tome+similarity'), [dropping])
  assert not finetune.needs_drop_merge(('tome', 'similarity'), [merging])


def test_bad_methods_and_levels(tiny_trained_run, tmp_path):
  config, vit_dir = tiny_trained_run
  c = config.copy_and_resolve_references()
  c.mode = 'pareto'
  c.init.vit_dir = vit_dir
  c.pareto.methods = ('mappo',)
  with pytest.raises(UserError, match="'mappo' is not a heuristic"):
    jobs.run(c, str(tmp_path))
  c.pareto.methods = ('similarity',)
  c.pareto.mergers = ('evit',)
  c.pareto.steer_weights = (0.5,)
  with pytest.raises(UserError, match='add tome to --config.pareto.mergers'):
    jobs.run(c, str(tmp_path))
  c.pareto.steer_weights = ()
  c.pareto.levels = (0.5, 1.5)
  with pytest.raises(UserError, match=r'--config.pareto.levels=\(0.5, 1.5\)'):
    jobs.run(c, str(tmp_path))
