"""The pruner comparison: one model, several pruners (heuristic or learned), one record each.

Per pruner: top-1 accuracy, macro-F1, GFLOPs per image (analytic, from the tokens actually kept),
throughput (images/s of the jitted forward on one eval batch after warm-up, median of interleaved
repeats), wall time of the whole split after compilation (reading the batches included), and mean
tokens kept after each layer. The records are plain dicts, ready for JSON/CSV; `markdown_table`
renders them. Reading the data, writing files and printing belong to the jobs.
"""

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

import jax
import numpy as np
from absl import logging
from scipy import stats

from vitprune_jax import parallel, pruning
from vitprune_jax.evaluation import evaluate
from vitprune_jax.models import vit

Batches = Iterable[dict[str, np.ndarray]]


def timing_order(num_variants: int, round_index: int) -> list[int]:
  """The order of the variants in timing round `round_index`: from variant round_index mod n on.

  Rotating the start means no variant is always timed first (right after the gap between rounds).
  """
  return [(round_index + j) % num_variants for j in range(num_variants)]


def measure_throughput(
  model: vit.VisionTransformer,
  params: Any,
  pruners: Sequence[Optional[pruning.Pruner]],
  execution: str,
  images: jax.Array,
  repeats: int,
  rng: jax.Array,
) -> list[float]:
  """Images/s of each pruned forward on the same batch (None = unpruned).

  Every forward is compiled and run once first; then `max(1, repeats)` rounds time each variant
  once, in the rotating `timing_order`; the median time of each variant gives its images/s.
  """

  def forward(pruner: Optional[pruning.Pruner]) -> Callable[..., jax.Array]:
    def fn(p, x, r):
      hooks = pruning.model_hooks(pruner, execution=execution, rng=r)
      return model.apply({'params': p}, x, **hooks)[0]

    return jax.jit(fn)

  fns = [forward(pruner) for pruner in pruners]
  for fn in fns:
    jax.block_until_ready(fn(params, images, rng))
  times = [[] for _ in fns]
  for round_index in range(max(1, repeats)):
    for i in timing_order(len(fns), round_index):
      start = time.perf_counter()
      jax.block_until_ready(fns[i](params, images, rng))
      times[i].append(time.perf_counter() - start)
  return [images.shape[0] / statistics.median(t) for t in times]


def compare_pruners(
  model: vit.VisionTransformer,
  params: Any,
  named: Sequence[tuple[str, Optional[pruning.Pruner]]],
  batches_fn: Callable[[], Batches],
  *,
  mesh: jax.sharding.Mesh,
  execution: str,
  rng: jax.Array,
  throughput_repeats: int = 0,
  with_correct: bool = False,
) -> list[dict[str, Any]]:
  """Evaluates each pruner on the same batches; one record per pruner, in order.

  GFLOPs: with compact execution those of the per-layer capacities (what really runs); with mask
  execution those of the mean tokens kept (what compact execution would run at best).
  `gflops_kept` is always the latter.

  Args:
    model: the ViT.
    params: its parameters, replicated over `mesh`.
    named: (record name, pruner) pairs; a None pruner runs the model unpruned. The record of the
      one named 'none' is the reference of `speedup`.
    batches_fn: returns a fresh iterable over the split's process-local numpy batches; called once
      per pruner and once more for the throughput batch. Warming the input pipeline (one untimed
      pass, so the first pruner's eval time does not pay for loading the data) is the caller's.
    mesh: the data-parallel mesh.
    execution: 'compact' or 'mask' (`pruning.EXECUTIONS`).
    rng: the pruners' key (the same for every pruner).
    throughput_repeats: > 0: also time each forward on the first batch, that many interleaved
      rounds (`measure_throughput`), adding `images_per_s` and `speedup` to the records.

  Returns:
    Records with the keys pruner, r_max, alpha, execution, split, accuracy, macro_f1, loss, gflops,
    gflops_kept, eval_time_s, tokens_per_layer, num_examples, gflops_ratio (+ images_per_s,
    speedup). r_max, alpha and split are None: the caller, who knows them, fills them in.
  """
  if execution not in pruning.EXECUTIONS:
    raise ValueError(f'execution must be one of {pruning.EXECUTIONS}, got {execution!r}')
  vit_cfg = model.config
  records = []
  for name, pruner in named:
    result = evaluate.evaluate_params(
      model, params, batches_fn(), mesh=mesh, pruner=pruner, execution=execution, rng=rng
    )
    logging.info(
      '%s: accuracy %.4f, tokens per layer %s',
      name,
      result.accuracy,
      [round(t, 1) for t in result.tokens_per_layer],
    )
    merge = pruner.merge_kind if pruner is not None else None
    gflops_kept = pruning.gflops(vit_cfg, result.tokens_per_layer, merge)
    capacities = pruner is not None and (execution == 'compact' or merge is not None)
    records.append(
      {
        'pruner': name,
        'r_max': None,
        'alpha': None,
        'execution': execution,
        'split': None,
        'accuracy': result.accuracy,
        'macro_f1': result.macro_f1,
        'loss': result.loss,
        'gflops': pruning.gflops(vit_cfg, pruner.budget, merge) if capacities else gflops_kept,
        'gflops_kept': gflops_kept,
        'eval_time_s': result.eval_time_s,
        'tokens_per_layer': [round(t, 2) for t in result.tokens_per_layer],
        'num_examples': result.num_examples,
      }
    )
    if with_correct:
      records[-1]['correct'] = result.correct
  full = pruning.gflops(vit_cfg, [vit_cfg.num_tokens] * vit_cfg.num_layers)
  for r in records:
    r['gflops_ratio'] = r['gflops'] / full
  if throughput_repeats > 0:
    batch = parallel.shard_batch(next(iter(batches_fn())), mesh)
    ips = measure_throughput(
      model, params, [p for _, p in named], execution, batch['image'], throughput_repeats, rng
    )
    names = [n for n, _ in named]
    base = ips[names.index('none')] if 'none' in names else None
    for r, v in zip(records, ips):
      r['images_per_s'] = v
      r['speedup'] = v / base if base else None
  return records


def mean_over_seeds(records: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
  """One record of a stochastic pruner run with several seeds (same capacities): the mean of the
  accuracy, macro-F1 and loss, the 95 % Student-t confidence half-width of the mean accuracy
  (`accuracy_ci95`, 0 for one seed), the per-seed accuracies, and the rest from the first seed."""
  accuracies = np.asarray([r['accuracy'] for r in records], np.float64)
  n = len(accuracies)
  half = 0.0
  if n > 1:
    half = float(stats.t.ppf(0.975, n - 1) * accuracies.std(ddof=1) / np.sqrt(n))
  merged = dict(records[0], pruner=name)
  for key in ('accuracy', 'macro_f1', 'loss'):
    merged[key] = float(np.mean([r[key] for r in records]))
  merged.update(accuracy_ci95=half, accuracy_seeds=[float(a) for a in accuracies], seeds=n)
  return merged


def markdown_table(records: Sequence[dict[str, Any]], title: str) -> str:
  """The records as a Markdown table under a `### title` line ('-' for what a record lacks)."""
  lines = [
    f'### {title}',
    '',
    '| pruner | r_max | alpha | accuracy (%) | macro-F1 | GFLOPs/img (1 MAC = 2 FLOPs) | '
    'GFLOPs vs unpruned | images/s | speedup | eval time (s) | '
    'tokens kept after each layer |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in records:
    ips = f'{r["images_per_s"]:.0f}' if r.get('images_per_s') else '-'
    speedup = f'{r["speedup"]:.2f}x' if r.get('speedup') else '-'
    tokens = ', '.join(f'{t:g}' for t in r['tokens_per_layer'])
    r_max = r['r_max'] if r['r_max'] is not None else '-'
    alpha = r['alpha'] if r['alpha'] is not None else '-'
    accuracy = f'{100 * r["accuracy"]:.2f}'
    if r.get('seeds', 1) > 1:
      accuracy += f' ± {100 * r["accuracy_ci95"]:.2f} ({r["seeds"]} seeds)'
    lines.append(
      f'| {r["pruner"]} | {r_max} | {alpha} | {accuracy} | '
      f'{r["macro_f1"]:.4f} | {r["gflops"]:.4f} | {r["gflops_ratio"]:.2f} | {ips} | '
      f'{speedup} | {r["eval_time_s"]:.1f} | {tokens} |'
    )
  return '\n'.join(lines) + '\n'
