"""mode='train_policy' on a tiny trained digits ViT: results, resume, reuse by mode='evaluate',
clear errors."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from vitprune_jax import checkpoints, jobs
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import evaluate, finetune, train_policy

# In-process jobs on one device: 8 simulated devices cost 2.5x the CPU for these tiny models.
pytestmark = pytest.mark.usefixtures('one_device_jobs')


@pytest.fixture
def vit_run(tiny_trained_run):
  return tiny_trained_run


def _policy_config(config, vit_dir, policy, updates):
  c = config.copy_and_resolve_references()
  c.mode = 'train_policy'
  c.init.vit_dir = vit_dir
  c.game.policy = policy
  c.ppo.num_envs = 16
  c.ppo.num_updates = updates
  c.ppo.log_every_steps = 2
  c.ppo.checkpoint_every_steps = 2
  c.eval.throughput_repeats = 1
  return c


@pytest.mark.slow
@pytest.mark.parametrize('policy', ['mappo', 'two_agent'])
def test_train_policy_writes_the_comparison(vit_run, tmp_path, policy):
  config, vit_dir = vit_run
  out = train_policy.run(_policy_config(config, vit_dir, policy, 4), str(tmp_path))
  saved = json.loads((tmp_path / 'train_policy_results.json').read_text())
  names = [r['pruner'] for r in saved['records']]
  # mappo: its own decisions and its scores filling the capacities; two_agent: deployed filled,
  # and its own votes.
  variants = [policy, f'{policy}+fill'] if policy == 'mappo' else [policy, f'{policy} (own votes)']
  assert names == ['none', 'random@matched', 'cls_attention@matched'] + variants
  random_record = saved['records'][1]
  assert random_record['seeds'] == 5 and len(random_record['accuracy_seeds']) == 5
  assert random_record['accuracy'] == pytest.approx(np.mean(random_record['accuracy_seeds']))
  fill, own = saved['records'][3:] if policy == 'two_agent' else saved['records'][3:][::-1]
  assert all(k <= c for k, c in zip(own['tokens_per_layer'], own['capacities']))
  assert fill['tokens_per_layer'] == pytest.approx(fill['capacities'])
  caps = saved['records'][0]['capacities']
  # Matched: the heuristics and the policy run the same per-layer capacities, hence the same GFLOPs.
  gflops = {r['pruner']: r['gflops'] for r in saved['records']}
  assert len(set(gflops[n] for n in names[1:])) == 1
  assert len(caps) == 2 and all(2 <= c <= 17 for c in caps)
  if policy == 'two_agent':  # Target 0.5 of 16 patches after block 0: 1 + 8 tokens from then on.
    assert caps == [9, 9]
  assert out['updates'] == 4 and os.listdir(tmp_path / 'policy' / 'checkpoints')


@pytest.mark.slow
def test_budget_mode_deploys_each_budget_and_keeps_the_best_on_validation(vit_run, tmp_path):
  config, vit_dir = vit_run
  c = _policy_config(config, vit_dir, 'mappo', 4)
  c.game.action_mode = 'budget'
  c.game.budget_range = (0.4, 0.9)
  c.deploy.budgets = (0.5, 0.75)
  c.deploy.random_seeds = 3
  out = train_policy.run(c, str(tmp_path))
  names = [r['pruner'] for r in out['records']]
  assert names == ['none'] + [
    f'{n}@b={b}'
    for b in ('0.5', '0.75')
    for n in ('random@matched', 'cls_attention@matched', 'mappo')
  ]
  # 16 patches, the point after block 0: floor(16 * b) patches + CLS, and exactly that many run.
  for record, tokens in zip(out['records'][3::3], (9, 13)):
    assert record['capacities'] == [tokens, tokens]
    assert record['tokens_per_layer'] == pytest.approx([tokens, tokens])
  assert out['records'][1]['seeds'] == 3
  # Checkpoints at updates 2 and 4 were scored on validation; the best is the one deployed.
  best = checkpoints.Checkpointer(str(tmp_path / 'policy'), read_only=True).best
  assert out['deployed_update'] == best.best_step() in (2, 4)


@pytest.mark.slow
def test_resume_and_reuse_by_evaluate(vit_run, tmp_path):
  config, vit_dir = vit_run

  def constrained(updates):  # RCPO: the efficiency weight is a multiplier that moves.
    c = _policy_config(config, vit_dir, 'mappo', updates)
    c.game.compute_target, c.game.lagrange_lr, c.game.efficiency_weight = 0.3, 0.5, 0.03
    return c

  train_policy.run(constrained(2), str(tmp_path))
  resumed = train_policy.run(constrained(4), str(tmp_path))
  assert checkpoints.Checkpointer(str(tmp_path / 'policy'), read_only=True).latest_step() == 4
  # Exact resume: 2 updates, then 2 more in a new process, equal 4 updates straight, multiplier
  # included (it left its start: kept compute is far above 0.3 after 4 updates).
  straight = train_policy.run(constrained(4), str(tmp_path / 'straight'))
  assert resumed['lagrange_multiplier'] == straight['lagrange_multiplier'] > 0.03
  resumed_params, straight_params = (
    checkpoints.Checkpointer(str(d / 'policy'), read_only=True).latest.restore(4)['params']
    for d in (tmp_path, tmp_path / 'straight')
  )
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed_params, straight_params)

  # The learned policy joins the heuristic comparison of mode='evaluate'.
  ev = config.copy_and_resolve_references()
  ev.mode = 'evaluate'
  ev.init.vit_dir = vit_dir
  ev.init.policy_dirs = (str(tmp_path),)
  ev.prune.pruners = ('none', 'cls_attention', 'mappo')
  ev.eval.throughput_repeats = 1
  ev.viz.num_images = 0
  records = jobs.run(ev, str(tmp_path / 'eval'))['records']
  assert [r['pruner'] for r in records] == ['none', 'cls_attention', 'mappo']

  # A two_agent run cannot resume a mappo policy directory.
  with pytest.raises(checkpoints.CheckpointError):
    train_policy.run(_policy_config(config, vit_dir, 'two_agent', 6), str(tmp_path))


def test_clear_errors(vit_run, tmp_path):
  config, vit_dir = vit_run
  c = _policy_config(config, vit_dir, 'mappo', 2)
  c.game.policy = 'genetic'
  with pytest.raises(UserError, match=r"--config.game.policy='genetic': choose one of: mappo"):
    jobs.run(c, str(tmp_path))
  c = _policy_config(config, vit_dir, 'two_agent', 2)
  c.game.compute_target = 0.5
  with pytest.raises(UserError, match='compute_target=0.5 constrains free-mode mappo only'):
    train_policy.run(c, str(tmp_path))
  c = _policy_config(config, '', 'mappo', 2)
  with pytest.raises(UserError, match='init.vit_dir'):
    train_policy.run(c, str(tmp_path))
  ev = config.copy_and_resolve_references()
  ev.init.vit_dir = vit_dir
  ev.prune.pruners = ('mappo',)
  with pytest.raises(UserError, match='init.policy_dirs'):
    evaluate.run(ev, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize('train_on', ['policy', 'deployed'])
def test_finetune_gives_every_method_its_own_copy(vit_run, tmp_path, train_on):
  config, vit_dir = vit_run
  train_policy.run(_policy_config(config, vit_dir, 'mappo', 2), str(tmp_path / 'policy_run'))
  ft = config.copy_and_resolve_references()
  ft.mode = 'finetune'
  ft.init.vit_dir = vit_dir
  ft.init.policy_dirs = (str(tmp_path / 'policy_run'),)
  ft.finetune.train_on = train_on
  # The heuristics' copies do not depend on train_on: trained once, in the 'policy' variant.
  heuristics = ('random', 'similarity') if train_on == 'policy' else ()
  ft.finetune.methods = ('none',) + heuristics + ('policy',)
  ft.deploy.random_seeds = 2
  ft.train.num_epochs = 1
  ft.train.prune_from_epoch = 0
  ft.eval.throughput_repeats = 1
  out = finetune.run(ft, str(tmp_path / 'ft'))
  # Each method trained its own copy from the trained ViT (same steps, not from scratch).
  for method in ft.finetune.methods:
    saved = json.loads((tmp_path / 'ft' / method / 'train_results.json').read_text())
    assert saved['steps'] == 1258 // 128
  assert json.loads((tmp_path / 'ft' / 'none' / 'train_results.json').read_text()).get(
    'train_pruner'
  ) in (None, 'none')
  comparison = json.loads((tmp_path / 'ft' / 'finetune_comparison.json').read_text())
  records = comparison['records']
  assert [r['pruner'] for r in records] == ['none', *heuristics, 'mappo', 'mappo+fill']
  assert all(r['finetuned'] for r in records)
  # Each scored on its own copy: the unpruned reference is the tuned 'none' copy, not the original.
  by_name = {r['pruner']: r for r in records}
  none_run = json.loads((tmp_path / 'ft' / 'none' / 'train_results.json').read_text())
  assert by_name['none']['accuracy'] == pytest.approx(none_run['test_accuracy'])
  # The heuristics ran the policy's capacities, in training and in evaluation.
  caps = comparison['capacities']
  for name in (*heuristics, 'mappo+fill'):
    assert by_name[name]['tokens_per_layer'] == pytest.approx(caps)
  if heuristics:
    assert by_name['random']['seeds'] == 2
    sim_run = json.loads((tmp_path / 'ft' / 'similarity' / 'train_results.json').read_text())
    assert sim_run['tokens_per_layer_pruned'] == pytest.approx(caps)
  trained = json.loads((pathlib.Path(vit_dir) / 'train_results.json').read_text())
  assert comparison['original_unpruned_test_accuracy'] == pytest.approx(trained['test_accuracy'])
  policy_run = json.loads((tmp_path / 'ft' / 'policy' / 'train_results.json').read_text())
  if train_on == 'deployed':  # Trained on exactly what is deployed: the filled capacities.
    assert policy_run['tokens_per_layer_pruned'] == pytest.approx(caps)
  else:  # The policy's own decisions, inside the capacities.
    assert all(k <= c + 1e-6 for k, c in zip(policy_run['tokens_per_layer_pruned'], caps))
  assert out['epochs'] == 1


def test_finetune_rejects_an_unknown_training_pruner(vit_run, tmp_path):
  config, vit_dir = vit_run
  ft = config.copy_and_resolve_references()
  ft.mode = 'finetune'
  ft.init.vit_dir, ft.init.policy_dirs, ft.finetune.train_on = vit_dir, (str(tmp_path),), 'oracle'
  with pytest.raises(UserError, match="--config.finetune.train_on='oracle': choose one of"):
    jobs.run(ft, str(tmp_path / 'ft'))
  assert not (tmp_path / 'ft').exists()
