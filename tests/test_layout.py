"""The package's shape: imports flow one way, and only jobs read the ConfigDict."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'vitprune_jax'

# What each part may import from the package. rl and evaluation stand side by side; data is read
# only by jobs; jobs may import everything; main only the jobs' entry points.
ALLOWED = {
  'errors': set(),
  'parallel': {'errors'},
  'checkpoints': {'errors'},
  'data': {'errors', 'data'},
  'models': {'errors', 'parallel', 'checkpoints', 'models'},
  'pruning': {'errors', 'models', 'pruning'},
  'rl': {'errors', 'parallel', 'checkpoints', 'models', 'pruning', 'rl'},
  'evaluation': {'errors', 'parallel', 'models', 'pruning', 'evaluation'},
  'training': {'errors', 'models', 'pruning', 'training'},
  'jobs': {
    'errors',
    'parallel',
    'checkpoints',
    'data',
    'models',
    'pruning',
    'rl',
    'evaluation',
    'training',
    'jobs',
  },
  'main': {'errors', 'jobs', 'parallel'},
}
LIBRARY = ('parallel', 'checkpoints', 'data', 'models', 'pruning', 'rl', 'evaluation', 'training')


def _part(path: pathlib.Path) -> str:
  rel = path.relative_to(PACKAGE)
  return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _modules():
  return sorted(p for p in PACKAGE.rglob('*.py') if p.name != '__init__.py' or p.parent != PACKAGE)


def _package_imports(tree: ast.AST):
  """(part imported, line, inside a function) for each `vitprune_jax` import."""
  functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  nested = {id(c) for f in functions for c in ast.walk(f)}
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('vitprune_jax'):
      parts = node.module.split('.')
      names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
    elif isinstance(node, ast.Import):
      names = [a.name.split('.')[1] for a in node.names if a.name.startswith('vitprune_jax.')]
    for name in names:
      yield name, node.lineno, id(node) in nested


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
  part = _part(path)
  for name, line, in_function in _package_imports(ast.parse(path.read_text())):
    assert name in ALLOWED[part], f'{path.name}:{line}: {part} must not import {name}'
    if part in LIBRARY:
      assert not in_function, f'{path.name}:{line}: a function-level import dodges a cycle'


@pytest.mark.parametrize(
  'path',
  [p for p in _modules() if _part(p) in LIBRARY],
  ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_library_takes_no_config_dict(path):
  source = path.read_text()
  assert 'ml_collections' not in source, f'{path.name} reads an ml_collections config'
  assert 'ConfigDict' not in source


def test_every_mode_is_a_job_with_run():
  from vitprune_jax import jobs  # noqa: PLC0415

  for mode, module in jobs.JOBS.items():
    path = PACKAGE / 'jobs' / f'{module.rsplit(".", 1)[1]}.py'
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == 'run' for n in tree.body), mode
