"""The config's contract: every experiment config loads and passes the checks, states only what it
changes, renamed keys name their replacement, and bad values fail with one line."""

import ast
import importlib
import pathlib

import ml_collections
import pytest

from configs import default
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import config as config_lib

CONFIGS = sorted(p.stem for p in pathlib.Path(default.__file__).parent.glob('*.py'))
EXPERIMENTS = [c for c in CONFIGS if c not in ('__init__', 'default')]
VARIANTS = {'digits_policy': ('mappo', 'two_agent'), 'fashion_mnist_policy': ('mappo', 'two_agent')}


def _load(name: str, variant: str | None = None) -> ml_collections.ConfigDict:
  module = importlib.import_module(f'configs.{name}')
  return module.get_config(variant) if variant else module.get_config()


@pytest.mark.parametrize(
  'name,variant',
  [(n, v) for n in EXPERIMENTS for v in VARIANTS.get(n, (None,))],
)
def test_every_experiment_config_passes_the_checks(name, variant):
  config_lib.check(_load(name, variant), default.get_config())


def _assignments(tree: ast.AST):
  """(dotted key, literal value) of each `config.a.b = <literal>` in get_config's body."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      target = ast.unparse(node.targets[0])
      if target.startswith('config.'):
        try:
          yield target[len('config.') :], ast.literal_eval(node.value), node.lineno
        except ValueError:
          continue


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiment_configs_restate_nothing_they_inherit(name):
  path = pathlib.Path(default.__file__).parent / f'{name}.py'
  tree = ast.parse(path.read_text())
  parents = [
    n.names[0].name
    for n in ast.walk(tree)
    if isinstance(n, ast.ImportFrom) and n.module == 'configs'
  ]
  assert len(parents) == 1, f'{name} should import exactly one parent config'
  parent = config_lib.flat(_load(parents[0]))
  # Inside a variant branch a key may legitimately repeat the parent for one variant, so only the
  # top-level statements of get_config are checked.
  body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'get_config')
  top = ast.Module(body=[s for s in body.body if isinstance(s, ast.Assign)], type_ignores=[])
  restated = [
    f'line {line}: config.{key} = {value!r}'
    for key, value, line in _assignments(top)
    if key in parent and parent[key] == (tuple(value) if isinstance(value, list) else value)
  ]
  assert not restated, f'{name} restates inherited values: {restated}'


def test_no_key_name_has_two_meanings():
  """The names that used to clash (alpha, num_epochs, mode) mean one thing each now."""
  keys = config_lib.flat(default.get_config())
  assert 'prune.alpha' in keys and not any(
    k.endswith('.alpha') and k != 'prune.alpha' for k in keys
  )
  assert [k for k in keys if k.endswith('num_epochs')] == ['train.num_epochs']
  assert [k for k in keys if k.split('.')[-1] == 'mode'] == ['mode']
  assert all(not k.endswith('_every') for k in keys)  # One cadence vocabulary: *_every_steps.


def test_every_default_key_has_a_comment():
  lines = pathlib.Path(default.__file__).read_text().splitlines()
  for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped.startswith('config.') and '=' in stripped and 'ConfigDict()' not in stripped:
      assert '#' in stripped or lines[i - 1].strip().startswith('#'), f'no comment: {stripped}'


@pytest.mark.parametrize(
  'old,new',
  [
    ('rl.alpha', 'game.accuracy_weight'),
    ('rl.num_epochs', 'ppo.update_epochs'),
    ('eval.checkpoint_dir', 'init.vit_dir'),
    ('train.init_from', 'init.vit_dir'),
    ('dataset.name', 'data.name'),
    ('prune.sweep_alphas', 'sweep.alphas'),
  ],
)
def test_a_renamed_key_names_its_replacement(old, new):
  assert config_lib.renamed_message(old) == (
    f'config key {old!r} is now {new!r}; write --config.{new}=...'
  )


def test_a_config_file_that_sets_a_renamed_key_fails_with_one_line():
  config = default.get_config()
  config.eval.checkpoint_dir = 'runs/digits'  # Unlocked: an old config file would create the key.
  with pytest.raises(UserError, match=r"'eval.checkpoint_dir' is now 'init.vit_dir'"):
    config_lib.check(config, default.get_config())


@pytest.mark.parametrize(
  'key,value,message',
  [
    ('prune.r_max', 1.5, r'--config.prune.r_max=1.5: must be a number in \[0.0, 1.0\]\.'),
    ('prune.alpha', 0.0, 'must be a positive number'),
    ('prune.execution', 'fast', 'choose one of: compact, mask'),
    ('mode', 'fly', 'choose one of: train, evaluate'),
    ('deploy.capacity_quantile', 0.0, r'must be a number in \(0.0, 1.0\]'),
    ('train.batch_size', 0, 'must be an integer >= 1'),
    ('game.pruning_points', (2, -1), 'tuple of non-negative block indices'),
    ('sweep.r_maxes', (0.5, 2.0), r'2.0: must be a number in \[0.0, 1.0\]'),
    ('init.policy_dirs', ('',), 'must be a tuple of directories'),
    ('data.rand_augment', 'rand-m9-w0', "must be timm's RandAugment string"),
    ('data.repeated_augment', 0, 'must be an integer >= 1'),
  ],
)
def test_bad_values_fail_with_one_line(key, value, message):
  config = default.get_config()
  section, name = key.split('.') if '.' in key else (None, key)
  if section:
    config[section][name] = value
  else:
    config[name] = value
  with pytest.raises(UserError, match=message) as e:
    config_lib.check(config, default.get_config())
  assert '\n' not in str(e.value)
