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
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp

from vitprune_jax import pruning
from vitprune_jax.evaluation import compare
from vitprune_jax.models import pretrained, vit
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


def jit_forward(model: vit.VisionTransformer, **hooks: Any) -> Callable[..., jax.Array]:
  """Logits only, with the `model.apply` hooks of a job (`pruning.model_hooks`): a deployed
  forward computes only the statistics its pruner reads, and so runs fused attention unless one
  needs the full map."""
  return jax.jit(lambda p, x: model.apply({'params': p}, x, **hooks)[0])


def jit_pruned(
  model: vit.VisionTransformer, pruner: Optional[pruning.Pruner], execution: str = 'compact'
) -> Callable[..., jax.Array]:
  return jit_forward(model, **pruning.model_hooks(pruner, execution=execution))


def time_call(fn: Callable[..., Any], *args: Any) -> float:
  """Wall seconds of one call, waiting for the result since dispatch is asynchronous."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def time_interleaved(
  fns: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]], repeats: int
) -> dict[str, list[float]]:
  """Seconds per call of every (function, arguments); each round runs all of them once, to share
  the noise, starting from variant (round mod n) (`compare.timing_order`)."""
  for fn, args in fns.values():
    jax.block_until_ready(fn(*args))  # Compile.
    jax.block_until_ready(fn(*args))  # Warm caches and thread pools.
  names = list(fns)
  samples = {name: [] for name in fns}
  for round_index in range(repeats):
    for i in compare.timing_order(len(names), round_index):
      fn, args = fns[names[i]]
      samples[names[i]].append(time_call(fn, *args))
  return samples


def summary(seconds: Sequence[float], batch_size: int) -> dict[str, float]:
  """Median, min, p95 (of per-call seconds) and the images/s of the median."""
  ordered = sorted(seconds)
  p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
  median = statistics.median(ordered)
  return {
    'median_s': median,
    'min_s': ordered[0],
    'p95_s': p95,
    'images_per_s': batch_size / median,
    'images_per_s_best': batch_size / ordered[0],
  }


def hf_vit_forward(cfg: vit.ViTConfig, dtype: str) -> Optional[Callable[[Any], Any]]:
  """HF transformers' ViT (PyTorch, SDPA attention) at the same geometry, random weights, eval
  mode, under `torch.inference_mode`; None when torch or transformers is not installed."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  hf_cfg = transformers.ViTConfig(**pretrained.hf_geometry(cfg), attn_implementation='sdpa')
  torch.manual_seed(0)
  torch_dtype = torch.bfloat16 if dtype == 'bfloat16' else torch.float32
  model = transformers.ViTForImageClassification(hf_cfg).eval().to(torch_dtype)

  def forward(images):
    with torch.inference_mode():
      return model(pixel_values=images).logits

  return forward


def hf_images(batch_size: int, cfg: vit.ViTConfig, dtype: str) -> Any:
  import torch

  torch_dtype = torch.bfloat16 if dtype == 'bfloat16' else torch.float32
  generator = torch.Generator().manual_seed(1)
  shape = (batch_size, cfg.num_channels, cfg.image_size, cfg.image_size)
  return torch.randn(shape, generator=generator).to(torch_dtype)


def run(
  batch_size: int,
  image_size: int,
  repeats: int,
  dtype: str,
  *,
  peers: bool = False,
  latency_calls: int = 0,
  large_batch: int = 0,
) -> dict[str, Any]:
  """Times every variant and derives the per-schedule figures; returns everything the JSON holds.

  `peers`: also HF transformers' ViT (PyTorch). `latency_calls`: batch-1 latency over that many
  rotated rounds. `large_batch`: throughput at that batch too (unpruned, cls_attention (0.6, 2),
  peer).
  """
  device = jax.devices()[0]
  cfg = deit_small_config(image_size, dtype)
  model = vit.VisionTransformer(cfg)

  def jax_images(b):
    key = jax.random.PRNGKey(1)
    return jax.device_put(jax.random.normal(key, (b, image_size, image_size, 3), jnp.float32))

  images = jax_images(batch_size)
  params = jax.device_put(jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])['params'])
  hf = hf_vit_forward(cfg, dtype) if peers else None
  if peers and hf is None:
    print(
      '--peers: torch or transformers is not installed (pip install torch transformers); '
      'timing without them.'
    )

  full_flops = pruning.vit_flops(cfg, [cfg.num_tokens] * cfg.num_layers)
  fns = {
    'unpruned': jit_pruned(model, None),
    'unpruned_again': jit_pruned(model, None),  # The A/A control: separately jitted.
  }
  pruners = {}
  for r_max, alpha in SCHEDULES:
    tag = f'r{r_max:g}_a{alpha:g}'
    pruner = pruning.make_pruner('cls_attention', cfg, r_max=r_max, alpha=alpha)
    pruners[tag] = (r_max, alpha, pruner)
    fns[f'{tag}/pruned'] = jit_pruned(model, pruner)
    fns[f'{tag}/oracle'] = jit_forward(
      model, token_selector=oracle_selector(pruner.budget), statistics=()
    )
    fns[f'{tag}/mask'] = jit_pruned(model, pruner, 'mask')
  mergers = {}
  for name, options in MERGERS:
    pruner = pruning.make_pruner(name, cfg, **options)
    mergers[name] = (options, pruner)
    fns[name] = jit_pruned(model, pruner)

  timed = {name: (fn, (params, images)) for name, fn in fns.items()}
  if hf is not None:
    timed['hf_transformers'] = (hf, (hf_images(batch_size, cfg, dtype),))
  samples = time_interleaved(timed, repeats)
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
  headline = 'r0.6_a2/pruned'
  throughput = {name: summary(s, batch_size) for name, s in samples.items()}
  result = {
    'jax_version': jax.__version__,
    'device': str(device),
    'device_kind': getattr(device, 'device_kind', ''),
    'backend': device.platform,
    'cpu_count': os.cpu_count(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'batch_size': batch_size,
    'image_size': image_size,
    'num_tokens': cfg.num_tokens,
    'dtype': dtype,
    'repeats': repeats,
    'unpruned_seconds': t_full,
    'unpruned_gflops_per_image': full_flops / 1e9,
    'throughput': throughput,
    'schedules': schedules,
    'merging': merging,
    'aa_ratio': median['unpruned_again'] / t_full,
    'min_quotient': min(s['quotient'] for s in schedules),
    'max_overhead_share': max(s['overhead_share'] for s in schedules),
    'max_mask_speedup': max(s['mask_speedup'] for s in schedules),
    'quotient_target_met': min(s['quotient'] for s in schedules) >= QUOTIENT_TARGET,
    'overhead_share_target_met': max(s['overhead_share'] for s in schedules) <= SHARE_TARGET,
    'quotient_target': QUOTIENT_TARGET,
    'overhead_share_target': SHARE_TARGET,
    'samples_seconds': samples,
  }
  if hf is not None:
    import torch
    import transformers

    result['peer'] = {
      'name': 'HF transformers ViTForImageClassification (PyTorch, SDPA)',
      'torch_version': torch.__version__,
      'transformers_version': transformers.__version__,
      'torch_threads': torch.get_num_threads(),
      'unpruned_vs_peer': median['hf_transformers'] / t_full,
      'cls_attention_0.6_2_vs_peer': median['hf_transformers'] / median[headline],
      'tome_vs_peer': median['hf_transformers'] / median['tome'],
    }

  latency_set = {
    'unpruned': fns['unpruned'],
    'unpruned_again': fns['unpruned_again'],
    headline: fns[headline],
    'tome': fns['tome'],
  }
  if latency_calls:
    one = jax_images(1)
    timed = {name: (fn, (params, one)) for name, fn in latency_set.items()}
    if hf is not None:
      timed['hf_transformers'] = (hf, (hf_images(1, cfg, dtype),))
    lat = time_interleaved(timed, latency_calls)
    result['latency_batch1'] = {name: summary(s, 1) for name, s in lat.items()}
  if large_batch:
    big = jax_images(large_batch)
    timed = {name: (latency_set[name], (params, big)) for name in ('unpruned', headline)}
    if hf is not None:
      timed['hf_transformers'] = (hf, (hf_images(large_batch, cfg, dtype),))
    large = time_interleaved(timed, max(2, repeats // 2))
    result['throughput_large_batch'] = {
      'batch_size': large_batch,
      **{name: summary(s, large_batch) for name, s in large.items()},
    }
  return result


def print_report(r: dict[str, Any]) -> None:
  """One row per schedule, then throughput, latency and each target (reported, never enforced)."""
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
  print(f'\nthroughput at batch {r["batch_size"]} (images/s, median / best):')
  for name, t in r['throughput'].items():
    print(f'  {name:<24} {t["images_per_s"]:8.2f} / {t["images_per_s_best"]:8.2f}')
  if 'throughput_large_batch' in r:
    large = dict(r['throughput_large_batch'])
    b = large.pop('batch_size')
    print(f'throughput at batch {b} (images/s, median / best):')
    for name, t in large.items():
      print(f'  {name:<24} {t["images_per_s"]:8.2f} / {t["images_per_s_best"]:8.2f}')
  if 'latency_batch1' in r:
    print('batch-1 latency (ms): p50 / p95 / min')
    for name, t in r['latency_batch1'].items():
      print(
        f'  {name:<24} {t["median_s"] * 1e3:8.2f} / {t["p95_s"] * 1e3:8.2f} / '
        f'{t["min_s"] * 1e3:8.2f}'
      )
  print(f'\nA/A control (unpruned again / unpruned): {r["aa_ratio"]:.3f} (want 0.97-1.03)')
  met = lambda ok: 'met' if ok else 'NOT met'
  print(f'max mask-mode "speedup" {r["max_mask_speedup"]:.2f} (want <= 1.02)')
  print(
    f'min quotient {r["min_quotient"]:.2f} (target >= {r["quotient_target"]:.1f}): '
    f'{met(r["quotient_target_met"])}'
  )
  print(
    f'max scoring+gather share {r["max_overhead_share"] * 100:.1f}% '
    f'(target <= {r["overhead_share_target"] * 100:.0f}%): {met(r["overhead_share_target_met"])}'
  )
  if 'peer' in r:
    p = r['peer']
    print(
      f'vs {p["name"]} (torch {p["torch_version"]}, {p["torch_threads"]} threads), ours / theirs '
      f'in images/s: unpruned {p["unpruned_vs_peer"]:.2f} (target >= 0.75), cls_attention '
      f'(0.6, 2) compact {p["cls_attention_0.6_2_vs_peer"]:.2f} (target >= 1.5), '
      f'ToMe r=13 {p["tome_vs_peer"]:.2f}'
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
    '--peers', action='store_true', help='also time HF transformers ViT (PyTorch) in the same run'
  )
  parser.add_argument(
    '--latency-calls', type=int, default=0, metavar='N', help='batch-1 latency over N rounds'
  )
  parser.add_argument(
    '--large-batch', type=int, default=0, metavar='B', help='throughput at batch B too (e.g. 256)'
  )
  parser.add_argument(
    '--json', default=None, metavar='PATH', help='also write every figure to this file'
  )
  args = parser.parse_args(argv)
  if args.image_size % 16:
    parser.error('--image-size must be a multiple of 16 (the patch size)')
  print(
    f'jax {jax.__version__}, device {jax.devices()[0]} '
    f'({os.cpu_count()} cores visible), {args.dtype}, '
    f'XLA_FLAGS={os.environ.get("XLA_FLAGS", "")!r}'
  )
  result = run(
    args.batch_size,
    args.image_size,
    args.repeats,
    args.dtype,
    peers=args.peers,
    latency_calls=args.latency_calls,
    large_batch=args.large_batch,
  )
  print_report(result)
  if args.json:
    result['command'] = 'PYTHONPATH=. python benchmarks/pruning_speed.py ' + ' '.join(
      argv if argv is not None else sys.argv[1:]
    )
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'wrote {args.json}')


if __name__ == '__main__':
  main()
