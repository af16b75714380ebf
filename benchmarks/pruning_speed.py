"""Does compact-mode token pruning turn its FLOP savings into wall-clock savings on CPU?

For seed 002's cls_attention schedules on DeiT-S geometry (random weights: timing does not depend
on them) this times four jitted forwards, interleaved within each repeat round so machine noise hits
them alike:

- unpruned: no selector;
- pruned: compact mode, the real scoring + top-k + gather path;
- oracle: compact mode with the same per-layer capacities, but tokens chosen by static slicing
  `x[:, :k]` (no scoring, no top-k, no gather), so `pruned - oracle` is what the pruning machinery
  itself costs;
- mask: mask mode, same decisions but full shapes, to show it buys no speed;
- ToMe at r = 13 and EViT at keep rate 0.7 after blocks 3, 6, 9 (`MERGERS`), the merging and fusion
  peers, through the same model hook as in every job;
- unpruned again: a second, separately jitted unpruned forward, the A/A control (its ratio to the
  first should be 1).

Each round times every variant once, starting from a different one each round (rotated order), so
no variant always runs first.

Speedup is measured (unpruned / pruned time), the FLOP ratio is analytic (`pruning.vit_flops`), and
their quotient says whether real time falls at least as fast as FLOPs do (target >= 1). Run from the
repository root:

  PYTHONPATH=. python benchmarks/pruning_speed.py [--json out.json]
"""

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp

from vitprune_jax import pruning
from vitprune_jax.evaluation import compare
from vitprune_jax.models import vit
from vitprune_jax.models.vit import TokenSelector, TokenStats

SCHEDULES = ((0.6, 2.0), (0.6, 1.2), (0.9, 1.0))
MERGERS = (('tome', {'r': 13}), ('evit', {'keep_rate': 0.7, 'layers': (3, 6, 9)}))
QUOTIENT_TARGET = 1.0  # Real speedup must at least match the FLOP reduction.
SHARE_TARGET = 0.03  # Scoring + top-k + gather may take at most 3 % of the pruned forward.


def deit_small_config(image_size: int, dtype: str) -> vit.ViTConfig:
  """DeiT-S geometry (197 tokens at 224 px); a smaller image only shrinks the token count."""
  return vit.ViTConfig(
    num_classes=1000,
    image_size=image_size,
    patch_size=16,
    hidden_size=384,
    num_layers=12,
    num_heads=6,
    mlp_dim=1536,
    dtype=dtype,
  )


def oracle_selector(budget: Sequence[int]) -> TokenSelector:
  """Same static capacities as compact mode, filled by slicing: the cost floor of any selection
  rule."""

  def selector(
    layer: int, x: jax.Array, keep_mask: jax.Array, stats: TokenStats
  ) -> tuple[jax.Array, jax.Array]:
    del stats
    k = budget[layer]
    if k >= x.shape[1]:
      return x, keep_mask
    return x[:, :k], keep_mask[:, :k]

  return selector


def jit_forward(
  model: vit.VisionTransformer,
  selector: Optional[TokenSelector],
  merger: Optional[vit.TokenMerger] = None,
) -> Callable[..., jax.Array]:
  """Logits only, so XLA drops the statistics no selector reads (as a deployed forward would)."""
  return jax.jit(
    lambda p, x: model.apply({'params': p}, x, token_selector=selector, token_merger=merger)[0]
  )


def time_call(fn: Callable[..., jax.Array], *args: Any) -> float:
  """Wall seconds of one call, waiting for the result since dispatch is asynchronous."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def time_interleaved(
  fns: dict[str, Callable[..., jax.Array]], args: tuple[Any, ...], repeats: int
) -> dict[str, list[float]]:
  """Seconds per call of every function; each round runs all of them once, to share the noise,
  starting from variant (round mod n) (`compare.timing_order`)."""
  for fn in fns.values():
    jax.block_until_ready(fn(*args))  # Compile.
    jax.block_until_ready(fn(*args))  # Warm caches and thread pools.
  names = list(fns)
  samples = {name: [] for name in fns}
  for round_index in range(repeats):
    for i in compare.timing_order(len(names), round_index):
      samples[names[i]].append(time_call(fns[names[i]], *args))
  return samples


def run(batch_size: int, image_size: int, repeats: int, dtype: str) -> dict[str, Any]:
  """Times every variant and derives the per-schedule figures; returns everything the JSON holds."""
  device = jax.devices('cpu')[0]
  cfg = deit_small_config(image_size, dtype)
  model = vit.VisionTransformer(cfg)
  images = jax.device_put(
    jax.random.normal(jax.random.PRNGKey(1), (batch_size, image_size, image_size, 3), jnp.float32),
    device,
  )
  params = jax.device_put(jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])['params'], device)

  full_flops = pruning.vit_flops(cfg, [cfg.num_tokens] * cfg.num_layers)
  fns = {'unpruned': jit_forward(model, None), 'unpruned_again': jit_forward(model, None)}
  pruners = {}
  for r_max, alpha in SCHEDULES:
    tag = f'r{r_max:g}_a{alpha:g}'
    pruner = pruning.make_pruner('cls_attention', cfg, r_max=r_max, alpha=alpha)
    pruners[tag] = (r_max, alpha, pruner)
    fns[f'{tag}/pruned'] = jit_forward(model, pruning.make_selector(pruner, execution='compact'))
    fns[f'{tag}/oracle'] = jit_forward(model, oracle_selector(pruner.budget))
    fns[f'{tag}/mask'] = jit_forward(model, pruning.make_selector(pruner, execution='mask'))

  mergers = {}
  for name, options in MERGERS:
    pruner = pruning.make_pruner(name, cfg, **options)
    mergers[name] = (options, pruner)
    fns[name] = jit_forward(model, None, pruner.merger)

  samples = time_interleaved(fns, (params, images), repeats)
  median = {name: statistics.median(s) for name, s in samples.items()}
  t_full = median['unpruned']

  schedules = []
  for tag, (r_max, alpha, pruner) in pruners.items():
    flop_ratio = full_flops / pruning.vit_flops(cfg, pruner.budget)
    t_pruned, t_oracle, t_mask = (median[f'{tag}/{v}'] for v in ('pruned', 'oracle', 'mask'))
    speedup = t_full / t_pruned
    schedules.append(
      {
        'r_max': r_max,
        'alpha': alpha,
        'budget': list(pruner.budget),
        'final_tokens': pruner.budget[-1],
        'flop_ratio': flop_ratio,
        'speedup': speedup,
        'quotient': speedup / flop_ratio,
        'overhead_share': (t_pruned - t_oracle) / t_pruned,
        'oracle_speedup': t_full / t_oracle,
        'oracle_quotient': t_full / t_oracle / flop_ratio,
        'mask_speedup': t_full / t_mask,
        'mask_quotient': t_full / t_mask / flop_ratio,
        'seconds': {'pruned': t_pruned, 'oracle': t_oracle, 'mask': t_mask},
      }
    )
  merging = []
  for name, (options, pruner) in mergers.items():
    flop_ratio = full_flops / pruning.vit_flops(cfg, pruner.budget, pruner.merge_kind)
    speedup = t_full / median[name]
    merging.append(
      {
        'method': name,
        'options': {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
        'budget': list(pruner.budget),
        'flop_ratio': flop_ratio,
        'speedup': speedup,
        'quotient': speedup / flop_ratio,
        'seconds': median[name],
      }
    )
  min_quotient = min(s['quotient'] for s in schedules)
  max_share = max(s['overhead_share'] for s in schedules)
  return {
    'jax_version': jax.__version__,
    'device': str(device),
    'backend': device.platform,
    'batch_size': batch_size,
    'image_size': image_size,
    'num_tokens': cfg.num_tokens,
    'dtype': dtype,
    'repeats': repeats,
    'unpruned_seconds': t_full,
    'unpruned_gflops_per_image': full_flops / 1e9,
    'schedules': schedules,
    'merging': merging,
    'aa_ratio': median['unpruned_again'] / t_full,
    'min_quotient': min_quotient,
    'max_overhead_share': max_share,
    'quotient_target': QUOTIENT_TARGET,
    'overhead_share_target': SHARE_TARGET,
    'quotient_target_met': min_quotient >= QUOTIENT_TARGET,
    'overhead_share_target_met': max_share <= SHARE_TARGET,
    'samples_seconds': samples,
  }


def print_report(r: dict[str, Any]) -> None:
  """One row per schedule, then whether each target holds (reported, never enforced)."""
  print(
    f'unpruned: {r["unpruned_seconds"] * 1e3:.1f} ms per batch of {r["batch_size"]} '
    f'({r["num_tokens"]} tokens, {r["unpruned_gflops_per_image"]:.2f} GFLOPs/image), '
    f'median of {r["repeats"]}'
  )
  header = (
    f'{"r_max":>5} {"alpha":>5} {"final":>5} {"FLOPx":>6} {"speedup":>7} {"quot":>6} '
    f'{"score+gather":>12} '
    f'{"oracle q":>8} {"mask spd":>8} {"mask q":>6}'
  )
  print(header)
  print('-' * len(header))
  for s in r['schedules']:
    print(
      f'{s["r_max"]:>5g} {s["alpha"]:>5g} {s["final_tokens"]:>5d} {s["flop_ratio"]:>6.2f} '
      f'{s["speedup"]:>7.2f} {s["quotient"]:>6.2f} {s["overhead_share"] * 100:>11.1f}% '
      f'{s["oracle_quotient"]:>8.2f} {s["mask_speedup"]:>8.2f} {s["mask_quotient"]:>6.2f}'
    )
  for m in r['merging']:
    print(
      f'{m["method"]} {m["options"]}: final {m["budget"][-1]} tokens, FLOPx {m["flop_ratio"]:.2f}, '
      f'speedup {m["speedup"]:.2f}, quotient {m["quotient"]:.2f}'
    )
  print(f'A/A control (unpruned again / unpruned): {r["aa_ratio"]:.3f}')
  met = lambda ok: 'met' if ok else 'NOT met'
  print(
    f'min quotient {r["min_quotient"]:.2f} (target >= {r["quotient_target"]:.1f}): '
    f'{met(r["quotient_target_met"])}'
  )
  print(
    f'max scoring+gather share {r["max_overhead_share"] * 100:.1f}% '
    f'(target <= {r["overhead_share_target"] * 100:.0f}%): {met(r["overhead_share_target_met"])}'
  )


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument(
    '--image-size', type=int, default=224, help='multiple of 16; 224 gives 197 tokens'
  )
  parser.add_argument('--repeats', type=int, default=5, help='timed rounds; the median is reported')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument(
    '--json', default=None, metavar='PATH', help='also write every figure to this file'
  )
  args = parser.parse_args(argv)
  if args.image_size % 16:
    parser.error('--image-size must be a multiple of 16 (the patch size)')
  print(
    f'jax {jax.__version__}, device {jax.devices("cpu")[0]} '
    f'({os.cpu_count()} cores visible), {args.dtype}'
  )
  result = run(args.batch_size, args.image_size, args.repeats, args.dtype)
  print_report(result)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
