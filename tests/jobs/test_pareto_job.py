"""mode='pareto' on a tiny trained digits ViT and a budget-mode policy: matched capacities at every
level, GFLOPs from the tokens that ran, random over seeds, the paired test, files, clear errors."""

import json

import pytest

from vitprune_jax import jobs, models, pruning
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import pareto, train_policy
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
  c.deploy.random_seeds = 3
  c.eval.throughput_repeats = 1
  out = jobs.run(c, str(tmp_path / 'pareto'))
  saved = json.loads((tmp_path / 'pareto' / 'pareto.json').read_text())
  assert (tmp_path / 'pareto' / 'pareto.png').stat().st_size > 0
  records = saved['records']
  methods = ['none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity']
  methods += ['random+merge', 'cls_attention+merge', 'mean_attention+merge', 'similarity+merge']
  methods += ['tome', 'evit', 'mappo', 'mappo+merge', 'mappo+merge (trained)']
  assert [r['method'] for r in records] == methods + methods[1:]
  families = {r['method']: r['family'] for r in records}
  assert families['random'] == 'random' and families['mappo'] == 'learned'
  assert families['similarity'] == 'heuristic' and families['none'] == 'none'
  assert families['tome'] == families['evit'] == families['similarity+merge'] == 'merging'
  assert families['random+merge'] == 'random' and families['mappo+merge'] == 'learned'
  assert families['mappo+merge (trained)'] == 'learned'
  model, _, _ = models.load_vit(vit_dir)
  cfg: vit.ViTConfig = model.config
  full = pruning.gflops(cfg, [cfg.num_tokens] * cfg.num_layers)
  for level in (0.9, 0.75):
    rows = [r for r in records if r['level'] == level]
    caps = rows[0]['capacities']
    merge_caps = next(r for r in rows if r['method'] == 'random+merge')['capacities']
    for r in rows:
      # GFLOPs of what ran: recomputed from the tokens each layer kept, not from the budget, the
      # merge priced for merging methods.
      drop_merge = '+merge' in r['method']
      merge = 'drop_merge' if drop_merge else (r['method'] if r['family'] == 'merging' else None)
      ran = pruning.gflops(cfg, r['tokens_per_layer'], merge) / full
      assert r['gflops_ratio'] == pytest.approx(ran)
      assert r['gflops_ratio'] <= level + 1e-9
      assert r['finetuned'] is False and r['images_per_s'] > 0
      if drop_merge:  # One budget for every drop-merge variant, at no more GFLOPs than caps.
        assert r['capacities'] == merge_caps and r['tokens_per_layer'] == pytest.approx(merge_caps)
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
  learned = ('mappo', 'mappo+merge', 'mappo+merge (trained)')
  assert all(t['learned'] in learned and 0 <= t['p_value'] <= 1 for t in tests)
  assert saved['git_commit'] is None or len(saved['git_commit']) == 40
  assert saved['config']['pareto']['levels'] == [0.9, 0.75]
  assert out['points'] == [0]

  # A free-mode policy has no budget to run at a level: one clear line.
  free_dir = _policy(config, vit_dir, str(tmp_path / 'free'), 'free')
  c.init.policy_dirs = (free_dir,)
  with pytest.raises(UserError, match='free-mode mappo policy'):
    pareto.run(c, str(tmp_path / 'bad'))


def test_bad_methods_and_levels(tiny_trained_run, tmp_path):
  config, vit_dir = tiny_trained_run
  c = config.copy_and_resolve_references()
  c.mode = 'pareto'
  c.init.vit_dir = vit_dir
  c.pareto.methods = ('mappo',)
  with pytest.raises(UserError, match="'mappo' is not a heuristic"):
    jobs.run(c, str(tmp_path))
  c.pareto.methods = ('similarity',)
  c.pareto.levels = (0.5, 1.5)
  with pytest.raises(UserError, match=r'--config.pareto.levels=\(0.5, 1.5\)'):
    jobs.run(c, str(tmp_path))
