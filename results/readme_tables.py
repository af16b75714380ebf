"""The README's result tables, regenerated from the committed files under results/.

  python results/readme_tables.py          # rewrite the tables in README.md
  python results/readme_tables.py --check  # exit 1 if README.md differs from results/

Each table sits in README.md between `<!-- table: NAME -->` and `<!-- /table -->`; NAME is a key
of `TABLES`. tests/test_readme.py runs the check, so the text and the files cannot drift apart.
"""

import importlib.util
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
README = HERE.parent / 'README.md'
BLOCK = re.compile(r'(<!-- table: (\w+) -->\n)(.*?)(<!-- /table -->)', re.S)


def _load(path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def budget_mappo() -> str:
  return _load(HERE / 'budget_mappo' / 'make_table.py').table()


def fashion_mnist_pareto() -> str:
  """Accuracy of every method at each GFLOPs level (rows: methods; columns: levels), then the
  GFLOPs that really ran, images/s and the paired test of each level."""
  run = json.loads((HERE / 'fashion_mnist' / 'pareto.json').read_text())
  records, levels = run['records'], run['levels']
  unpruned = next(r for r in records if r['family'] == 'none')
  methods = list(dict.fromkeys(r['method'] for r in records if r['family'] != 'none'))
  at = {(r['method'], r['level']): r for r in records}

  def cell(r):
    text = f'{100 * r["accuracy"]:.2f}'
    if r.get('seeds', 1) > 1:
      text += f' ± {100 * r["ci95"]:.2f}'
    return text

  header = ' | '.join(f'{v:g}x' for v in levels)
  lines = [
    f'| method (family) | {header} |',
    '|---|' + '---|' * len(levels),
    f'| none, unpruned: {100 * unpruned["accuracy"]:.2f} % | '
    + ' | '.join('' for _ in levels)
    + ' |',
  ]
  for m in methods:
    rows = [at[(m, v)] for v in levels]
    seeds = rows[0].get('seeds', 1)
    name = f'{m} ({rows[0]["family"]}{f", {seeds} seeds" if seeds > 1 else ""})'
    best = [
      max((at[(o, v)] for o in methods), key=lambda r: r['accuracy'])['method'] == m for v in levels
    ]
    cells = [f'**{cell(r)}**' if b else cell(r) for r, b in zip(rows, best)]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  ratios = [at[(methods[0], v)]['gflops_ratio'] for v in levels]
  lines.append(
    '| GFLOPs of the level (merging methods: at most this) | '
    + ' | '.join(f'{x:.3f}' for x in ratios)
    + ' |'
  )
  for family in ('heuristic', 'merging'):
    tests = {t['level']: t for t in run['paired_tests'] if t.get('against', 'heuristic') == family}
    if not tests:
      continue
    cells = []
    for v in levels:
      t = tests[v]
      baseline = t.get('baseline', t.get('heuristic'))
      cells.append(f'{100 * t["difference"]:+.2f} ({baseline}), p={t["p_value"]:.2g}')
    lines.append(
      f'| best learned − best {family}, McNemar p (worst seed) | ' + ' | '.join(cells) + ' |'
    )
  steered = [m for m in methods if 'steer_weight' in at[(m, levels[0])].get('options', {})]
  if steered:
    lines.append('')
    lines.append('Steered ToMe, the weight chosen on validation at each level (per seed):')
    lines.append('')
    for m in steered:
      weights = [at[(m, v)]['options']['steer_weight'] for v in levels]
      cells = ' / '.join(','.join(f'{w:g}' for w in ws) for ws in weights)
      lines.append(f'- {m}: {cells}')
  return '\n'.join(lines) + '\n'


def fashion_mnist_evaluate() -> str:
  """mode=evaluate at seed 002's schedule: accuracy, GFLOPs and the background share per pruner."""
  run = json.loads((HERE / 'fashion_mnist' / 'evaluate' / 'evaluate_results.json').read_text())
  shares = run.get('background_share', {})
  lines = [
    '| pruner | accuracy (%) | macro-F1 | GFLOPs vs unpruned | kept patches that are background, '
    'after the first / last block (%) |',
    '|---|---|---|---|---|',
  ]
  for r in run['records']:
    share = shares.get(r['pruner'])
    bg = '-'
    if share is not None:
      first, last = share['kept_background_share'][0], share['kept_background_share'][-1]
      bg = f'{100 * first:.1f} / {100 * last:.1f}'
    lines.append(
      f'| {r["pruner"]} | {100 * r["accuracy"]:.2f} | {r["macro_f1"]:.3f} | '
      f'{r["gflops_ratio"]:.2f} | {bg} |'
    )
  return '\n'.join(lines) + '\n'


def fashion_mnist_finetune(folder: str = 'finetune') -> str:
  """mode=finetune: every method fine-tuned on its own pruning, scored on its own copy, and the
  paired tests of the best fine-tuned policy; the differences against the fine-tuned unpruned ViT
  of results/fashion_mnist/finetune (the same recipe) where `folder` has none."""
  run = json.loads((HERE / 'fashion_mnist' / folder / 'finetune_comparison.json').read_text())
  first = json.loads((HERE / 'fashion_mnist' / 'finetune' / 'finetune_comparison.json').read_text())
  reference = next(r for r in run['records'] + first['records'] if r['method'] == 'none')
  lines = [
    '| method (family; its own fine-tuned copy) | accuracy (%) | vs fine-tuned unpruned (pt) | '
    'GFLOPs vs unpruned |',
    '|---|---|---|---|',
    f'| original ViT, unpruned, not fine-tuned | '
    f'{100 * run["original_unpruned_test_accuracy"]:.2f} | | 1.00 |',
  ]
  for r in run['records']:
    accuracy = f'{100 * r["accuracy"]:.2f}'
    if r.get('seeds', 1) > 1:
      accuracy += f' ± {100 * r["accuracy_ci95"]:.2f} ({r["seeds"]} seeds)'
    delta = 100 * (r['accuracy'] - reference['accuracy'])
    options = ', '.join(
      f'{k.replace("_", " ")} {v:g}'
      for k, v in r.get('options', {}).items()
      if k != 'budget' and isinstance(v, (int, float))
    )
    name = f'{r["pruner"]}{f" ({options})" if options else ""} ({r["family"]})'
    lines.append(f'| {name} | {accuracy} | {delta:+.2f} | {r["gflops_ratio"]:.3f} |')
  for t in run['paired_tests']:
    lines += [
      '',
      f'Paired (McNemar, exact): {t["learned"]} vs {t["baseline"]} ({t["against"]}): '
      f'{100 * t["difference"]:+.2f} pt, {t["a_only"]} vs {t["b_only"]} images only one gets '
      f'right, p = {t["p_value"]:.2g}.',
    ]
  return '\n'.join(lines) + '\n'


TABLES = {
  'fashion_mnist_finetune': fashion_mnist_finetune,
  'fashion_mnist_finetune_steered': lambda: fashion_mnist_finetune('finetune_steered'),
  'budget_mappo': budget_mappo,
  'fashion_mnist_pareto': fashion_mnist_pareto,
  'fashion_mnist_evaluate': fashion_mnist_evaluate,
}


def render(text: str) -> str:
  """`text` with every marked table replaced by its regenerated version."""

  def replace(match):
    name = match.group(2)
    if name not in TABLES:
      raise KeyError(f'README.md marks an unknown table {name!r}; known: {", ".join(TABLES)}')
    return match.group(1) + TABLES[name]() + match.group(4)

  return BLOCK.sub(replace, text)


def main(argv: list[str]) -> int:
  text = README.read_text()
  new = render(text)
  if '--check' in argv:
    if new != text:
      print('README.md tables differ from results/: run python results/readme_tables.py')
      return 1
    return 0
  README.write_text(new)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
