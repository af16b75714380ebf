"""The README tells the truth: its library snippet runs as written, its fresh-machine commands name
files that exist, and every config file and `--config.<key>` it mentions is real."""

import configparser
import importlib
import importlib.util
import pathlib
import re

import numpy as np
import pytest

from configs import default
from vitprune_jax import pruning
from vitprune_jax.jobs import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
DOCS = (README, REPO / 'benchmarks' / 'README.md')
SNIPPET_WORKDIR = "'runs/digits'"


def _section(text: str, heading: str) -> str:
  """The text under the `## heading` line, up to the next heading of the same level."""
  match = re.search(rf'^## {re.escape(heading)}\n(.*?)(?=^## |\Z)', text, re.M | re.S)
  assert match, f'README.md has no "## {heading}" section'
  return match.group(1)


def _first_block(section: str, language: str) -> str:
  match = re.search(rf'^```{language}\n(.*?)^```', section, re.M | re.S)
  assert match, f'no ```{language} block in the section'
  return match.group(1)


def _commands(block: str) -> list[str]:
  """The shell commands of a bash block: comments dropped, backslash continuations joined."""
  joined = re.sub(r'\\\n\s*', ' ', block)
  return [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith('#')]


def _flat_default() -> dict:
  return config_lib.flat(default.get_config())


# --- The library snippet --------------------------------------------------------------------------


def test_tokens_per_layer_of_the_snippets_schedule():
  """The budget the snippet's pruner has on the fixture's model, by hand: 16 patches, 2 layers,
  keep_ratio(l) = 1 - 0.6 * ((l + 1) / 2) ** 2 = 0.85, 0.4 of the remaining patches, floored:
  13 patches (+ CLS = 14), then 0.4 * 13 = 5.2 -> 5 (+ CLS = 6)."""
  assert pruning.tokens_per_layer(16, 2, 0.6, 2.0) == [14, 6]


def test_library_api_snippet_runs_as_written(tiny_trained_run):
  _, workdir = tiny_trained_run
  snippet = _first_block(_section(README.read_text(), 'Library API'), 'python')
  assert snippet.count(SNIPPET_WORKDIR) == 1, 'the snippet should load one workdir, runs/digits'
  namespace = {}
  exec(compile(snippet.replace(SNIPPET_WORKDIR, repr(workdir)), 'README.md', 'exec'), namespace)

  model, params, pruner = namespace['model'], namespace['params'], namespace['pruner']
  images, logits, kept = namespace['images'], namespace['logits'], namespace['kept']
  num_layers = model.config.num_layers
  assert num_layers == 2  # The fixture's model: what the hand-computed budget below assumes.
  assert np.shape(logits) == (4, 10)
  assert np.shape(kept) == (4, num_layers)
  assert pruner.budget == (14, 6)
  np.testing.assert_array_equal(np.asarray(kept)[:, -1], pruner.budget[-1])

  mask_logits, mask_kept = pruning.forward(model, params, images, pruner, execution='mask')
  np.testing.assert_allclose(np.asarray(mask_logits), np.asarray(logits), atol=1e-5, rtol=0)
  np.testing.assert_array_equal(np.asarray(mask_kept), np.asarray(kept))


def test_the_snippets_pruner_names_are_registered():
  """The README says `pruning.PRUNERS` lists the names; the snippet's name must be one of them."""
  snippet = _first_block(_section(README.read_text(), 'Library API'), 'python')
  names = re.findall(r"make_pruner\('(\w+)'", snippet)
  assert names and all(n in pruning.PRUNERS for n in names), names


# --- The two fresh-machine commands ---------------------------------------------------------------


def test_fresh_machine_commands_name_files_that_exist():
  block = _first_block(_section(README.read_text(), 'Set-up: two commands'), 'bash')
  commands = _commands(block)
  assert len(commands) == 2, commands
  quickstart, tests = commands

  config = re.search(r'--config (\S+)', quickstart)
  assert config and config.group(1) == 'configs/digits_vit.py', quickstart
  assert (REPO / config.group(1)).is_file()
  extra = re.search(r"pip install -e '\.\[(\w+)\]'", quickstart)
  assert extra, quickstart
  setup = configparser.ConfigParser()
  setup.read(REPO / 'setup.cfg')
  extras = setup['options.extras_require']
  assert extra.group(1) in extras, f'setup.cfg has no [{extra.group(1)}] extra'

  pytest_cmd = re.search(r'python -m pytest .*', tests)
  assert pytest_cmd, tests
  assert (REPO / pytest_cmd.group(0).split()[-1]).is_dir(), 'the test command names no test folder'
  if ' -n ' in pytest_cmd.group(0):
    assert 'pytest-xdist' in extras[extra.group(1)], '-n needs pytest-xdist in the install'
  ci = (REPO / '.ci' / 'run').read_text()
  assert pytest_cmd.group(0) in ci, 'CI should run exactly the README test command'


# --- Config files and keys ------------------------------------------------------------------------


def _config_mentions() -> list[tuple[str, str]]:
  """(name, variant or '') of every `configs/<name>.py[:variant]` in the READMEs."""
  text = '\n'.join(p.read_text() for p in DOCS)
  return sorted(set(re.findall(r'configs/(\w+)\.py(?::(\w+))?', text)))


def test_readme_mentions_config_files():
  names = {name for name, _ in _config_mentions()}
  assert {'digits_vit', 'default', 'digits_policy'} <= names, names


@pytest.mark.parametrize('name,variant', _config_mentions())
def test_every_config_file_the_readme_mentions_exists(name, variant):
  assert (REPO / 'configs' / f'{name}.py').is_file(), f'configs/{name}.py does not exist'
  if variant:
    module = importlib.import_module(f'configs.{name}')
    config = module.get_config(variant)
    config_lib.check(config, default.get_config())  # An unknown variant fails a value check.


def _override_keys() -> list[str]:
  """Every `--config.<key>` of the READMEs; `--config.<section>.*` gives the section."""
  text = '\n'.join(p.read_text() for p in DOCS)
  keys = re.findall(r'--config\.([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+|\.\*)*)', text)
  return sorted(set(keys))


def test_readme_has_config_overrides():
  keys = _override_keys()
  assert 'init.vit_dir' in keys and 'init.policy_dirs' in keys, keys


@pytest.mark.parametrize('key', _override_keys())
def test_every_config_override_in_the_readme_is_a_key(key):
  flat = _flat_default()
  if key.endswith('.*'):
    section = key[:-2]
    assert any(k.startswith(section + '.') for k in flat), f'configs/default.py has no {section}.*'
  else:
    assert key in flat, config_lib.renamed_message(key) or f'{key} is not in configs/default.py'


def test_keys_named_in_the_prose_are_current():
  """Inline `section.key` spans (outside commands) name keys of configs/default.py, none renamed."""
  flat = _flat_default()
  sections = {k.split('.')[0] for k in flat} | {k.split('.')[0] for k in config_lib.RENAMED}
  file_suffixes = {'py', 'sh', 'md', 'json', 'csv', 'png', 'npz', 'bin', 'pt', 'pth', 'safetensors'}
  wrong = []
  for path in DOCS:
    for span in re.findall(r'`([a-z_]+\.[a-z0-9_]+)(?:=[^`]*)?`', path.read_text()):
      section, name = span.split('.')
      if section in sections and name not in file_suffixes and span not in flat:
        wrong.append(f'{path.name}: `{span}`: {config_lib.renamed_message(span) or "unknown key"}')
  assert not wrong, '\n'.join(wrong)


def test_the_result_tables_are_those_of_the_committed_files():
  """Every table marked in README.md is what results/readme_tables.py makes from results/."""
  spec = importlib.util.spec_from_file_location(
    'readme_tables', REPO / 'results' / 'readme_tables.py'
  )
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  text = README.read_text()
  assert text.count('<!-- table: ') >= 2
  assert tables.render(text) == text, 'run python results/readme_tables.py'
  with pytest.raises(KeyError, match='unknown table'):
    tables.render('<!-- table: nothing -->\n<!-- /table -->')
