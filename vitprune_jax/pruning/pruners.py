"""Heuristic token pruners: a per-token score (higher = keep) plus a static per-layer budget.

Scores are pure functions `(layer, tokens, keep_mask, stats, key) -> (B, N)` of what the model
already computed (`models.vit.TokenStats`), so scoring costs no second pass. Budgets are Python ints
(tokens kept after each layer, CLS included) so compact execution can gather into fixed capacities
under `jit`.

`PRUNERS` maps each name to its builder `(vit_cfg, **options) -> Pruner`; `make_pruner` checks the
name and the options. Every scoring pruner takes the schedule options `schedule` ('keep_ratio', the
default: seed 002's formula with `r_max` and `alpha`, `schedules.tokens_per_layer`; or
'deit_standard': keep 0.7 / 0.49 / 0.343 of the patches after blocks 3 / 6 / 9 of 12, as EViT,
DynamicViT and RL4EViT report, `schedules.deit_standard`).

- `none`: keeps everything.
- `cls_attention` (seed 002 §1.1): attention from CLS, averaged over heads, with the keep_ratio
  schedule.
- `inverse_cls_attention`: the opposite ranking, a control: if it beats cls_attention, CLS attention
  points at what the model does not need.
- `cls_value_attention`: CLS attention weighted by the norm of each token's value, a_j * ||v_j||
  per head, mean over heads (issue 11's diagnostic: attention to a token with a small value moves
  CLS little). Same schedule.
- `mean_attention` (seed 002 §1.2): mean attention a token receives from the other kept patches,
  same schedule.
- `similarity`: drops the most redundant tokens first; redundancy = highest cosine similarity to
  another kept patch token. Same schedule.
- `random` (seed 000's baseline): uniform scores from the PRNG key, same counts as the schedule.
- `greedy` (seed 000's baseline, our exact rule): one shot at the first pruning point (after block
  0), keep the top-k by CLS attention and never prune again; k is the largest count whose GFLOPs do
  not exceed the schedule's, so greedy is compared with the schedule at (nearly) the same compute.

Merging and fusion (`pruning.merging`, run between attention and MLP through `Pruner.merger`; no
score, their budget is the token count they leave after each block):
- `tome` (option `r`): ToMe's bipartite soft matching, r merges per block, proportional attention.
  With `steer` (a scoring heuristic of `STEERS`) and `steer_weight`: steered ToMe, whose matching
  avoids merging the tokens that heuristic scores high (`merging.tome_merge`), named
  'tome+<steer>'; `steered_tome` steers it by any pruner's score, a learned policy's included.
- `evit` (options `keep_rate`, `layers`; () = L/4, L/2, 3L/4): EViT's top-k by CLS attention with
  the rest fused into one token.
"""

import dataclasses
import inspect
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from vitprune_jax.errors import UserError
from vitprune_jax.models.vit import STATISTICS, TokenMerger, TokenStats, ViTConfig
from vitprune_jax.pruning import flops, merging, schedules

Array = jax.Array
ScoreFn = Callable[[int, Array, Array, TokenStats, Array], Array]


@dataclasses.dataclass(frozen=True)
class Pruner:
  name: str
  score_fn: Optional[ScoreFn]  # None = keep everything.
  budget: tuple[int, ...]  # Tokens (CLS included) kept after each layer: the static capacity.
  # Learned policies decide per image: a token scoring below the threshold is dropped even if the
  # capacity has room (it then stays masked inside the capacity). None = fill the capacity.
  threshold: Optional[float] = None
  # Merging (ToMe) or fusion (EViT) between attention and MLP instead of scoring; the budget is
  # then the token count it leaves after each block.
  merger: Optional[TokenMerger] = None
  # The `TokenStats` fields its score or merger reads; the forward computes only those, and runs
  # fused attention unless one needs the full map (`vit.NEEDS_FULL_MAP`). Default: all of them.
  statistics: tuple[str, ...] = STATISTICS
  # Drop-merge (`merging.merge_into_kept`, `with_merging`): what the score does not keep merges
  # into its most similar kept token instead of being dropped. Needs threshold None.
  merge_dropped: bool = False

  @property
  def merge_kind(self) -> Optional[str]:
    """'tome' | 'evit' | 'drop_merge' for a merging pruner (how its FLOPs are counted), else
    None."""
    if self.merge_dropped:
      return 'drop_merge'
    return self.merger.kind if self.merger is not None else None


def with_merging(pruner: Pruner) -> Pruner:
  """`pruner`'s drop-merge variant, named '<name>+merge': the same scores and capacities, and what
  it does not keep merges into the kept tokens (`merging.merge_into_kept`). ValueError for a
  merging pruner, one with a threshold (the capacities must be filled), or capacities below 2."""
  if pruner.score_fn is None or pruner.merger is not None or pruner.merge_dropped:
    raise ValueError(f'{pruner.name!r} has no scores to drop-merge by')
  if pruner.threshold is not None:
    raise ValueError(f'{pruner.name!r} has a threshold: drop-merge fills its capacities')
  if min(pruner.budget) < 2:
    raise ValueError(f'{pruner.name!r}: drop-merge needs >= 2 tokens after every block')
  return dataclasses.replace(pruner, name=f'{pruner.name}+merge', merge_dropped=True)


def cls_attention_score(
  layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array
) -> Array:
  del layer, x, keep_mask, key
  return stats.cls_attention


def inverse_cls_attention_score(
  layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array
) -> Array:
  """Minus CLS attention: keeps what CLS attends to least (a control for cls_attention)."""
  del layer, x, keep_mask, key
  return -stats.cls_attention


def cls_value_attention_score(
  layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array
) -> Array:
  """CLS attention weighted by the value norm, a_j * ||v_j|| (a diagnostic of cls_attention)."""
  del layer, x, keep_mask, key
  return stats.cls_value_attention


def mean_attention_score(
  layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array
) -> Array:
  del layer, x, keep_mask, key
  return stats.mean_attention


def similarity_score(
  layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array
) -> Array:
  """Minus the highest cosine similarity to another kept patch token: duplicates score lowest."""
  del layer, stats, key
  x = x.astype(jnp.float32)
  xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
  sim = jnp.einsum('bnd,bmd->bnm', xn, xn)
  n = x.shape[1]
  others = (
    (keep_mask[:, None, :] > 0) & ~jnp.eye(n, dtype=bool)[None] & (jnp.arange(n) > 0)[None, None, :]
  )
  redundancy = jnp.max(jnp.where(others, sim, -1.0), axis=-1)
  return -redundancy


def random_score(layer: int, x: Array, keep_mask: Array, stats: TokenStats, key: Array) -> Array:
  del x, stats
  return jax.random.uniform(jax.random.fold_in(key, layer), keep_mask.shape)


def matched_one_shot_keep(vit_cfg: ViTConfig, budget: list[int]) -> int:
  """Largest constant token count after block 0 whose GFLOPs stay within those of `budget`."""
  target = flops.vit_flops(vit_cfg, budget)
  best = 2
  for keep in range(2, vit_cfg.num_tokens + 1):
    one_shot = schedules.constant_after_first(vit_cfg.num_tokens, vit_cfg.num_layers, keep)
    if flops.vit_flops(vit_cfg, one_shot) <= target:
      best = keep
  return best


def _schedule(
  name: str, vit_cfg: ViTConfig, r_max: float, alpha: float, schedule: str = 'keep_ratio'
) -> list[int]:
  """The per-layer counts of `schedule`: seed 002's keep_ratio(r_max, alpha), or `deit_standard`
  (which ignores r_max and alpha). Bad values are the caller's input: a one-line error."""
  if schedule not in schedules.SCHEDULES:
    raise UserError(
      f'Pruner {name!r}: unknown schedule {schedule!r}; choose from: '
      f'{", ".join(schedules.SCHEDULES)}.'
    )
  if schedule == 'deit_standard':
    if vit_cfg.num_layers < 4:
      raise UserError(
        f'Pruner {name!r}: deit_standard prunes after 3 of the first quarters of the blocks and '
        f'needs >= 4 blocks; this model has {vit_cfg.num_layers}. Use schedule=keep_ratio.'
      )
    return schedules.deit_standard(vit_cfg.num_patches, vit_cfg.num_layers)
  if not 0.0 <= r_max <= 1.0:
    raise UserError(f'Pruner {name!r}: r_max={r_max} must be in [0, 1].')
  if not alpha > 0.0:
    raise UserError(f'Pruner {name!r}: alpha={alpha} must be positive.')
  return schedules.tokens_per_layer(vit_cfg.num_patches, vit_cfg.num_layers, r_max, alpha)


def build_none(vit_cfg: ViTConfig) -> Pruner:
  budget = tuple(schedules.unpruned(vit_cfg.num_tokens, vit_cfg.num_layers))
  return Pruner('none', None, budget, statistics=())


def _scheduled(name: str, score_fn: ScoreFn, statistics: tuple[str, ...]) -> Callable[..., Pruner]:
  """The builder of a pruner that ranks by `score_fn` (which reads `statistics`) and keeps seed
  002's schedule of counts."""

  def build(
    vit_cfg: ViTConfig, *, r_max: float, alpha: float, schedule: str = 'keep_ratio'
  ) -> Pruner:
    budget = tuple(_schedule(name, vit_cfg, r_max, alpha, schedule))
    return Pruner(name, score_fn, budget, statistics=statistics)

  build.__name__ = f'build_{name}'
  return build


def build_greedy(
  vit_cfg: ViTConfig, *, r_max: float, alpha: float, schedule: str = 'keep_ratio'
) -> Pruner:
  keep = matched_one_shot_keep(vit_cfg, _schedule('greedy', vit_cfg, r_max, alpha, schedule))
  return _greedy(vit_cfg, keep)


def _greedy(vit_cfg: ViTConfig, keep: int) -> Pruner:
  budget = schedules.constant_after_first(vit_cfg.num_tokens, vit_cfg.num_layers, keep)
  return Pruner('greedy', cls_attention_score, tuple(budget), statistics=('cls_attention',))


def build_tome(
  vit_cfg: ViTConfig, *, r: int, steer: str = '', steer_weight: float = 0.25
) -> Pruner:
  if isinstance(r, bool) or not isinstance(r, int) or r < 0:
    raise UserError(f"Pruner 'tome': r={r!r} must be a whole number of merges per block, >= 0.")
  if not steer:
    return steered_tome(vit_cfg, r)
  if steer not in STEERS:
    raise UserError(
      f"Pruner 'tome': steer={steer!r} is not a scoring heuristic; choose from: "
      f'{", ".join(STEERS)} (or leave it empty for ToMe).'
    )
  if not steer_weight >= 0.0:
    raise UserError(f"Pruner 'tome': steer_weight={steer_weight} must be >= 0.")
  scorer = make_pruner(steer, vit_cfg, r_max=0.0, alpha=1.0)
  return steered_tome(vit_cfg, r, scorer, float(steer_weight))


def steered_tome(
  vit_cfg: ViTConfig, r: int, by: Optional[Pruner] = None, weight: float = 0.0
) -> Pruner:
  """ToMe at r merges per block, named 'tome'; with `by` (any scoring pruner, a learned policy's
  included; only its score is used) steered ToMe at `weight` (`merging.tome_merge`), named
  'tome+<by.name>', reading the statistics `by` reads."""
  steps = merging.tome_r_per_layer(vit_cfg.num_tokens, vit_cfg.num_layers, r)
  counts = merging.tome_counts(vit_cfg.num_tokens, vit_cfg.num_layers, r)
  if by is not None and by.score_fn is None:
    raise ValueError(f'{by.name!r} has no scores to steer ToMe by')
  steer = None if by is None else by.score_fn
  merge = merging.tome_merge(tuple(steps), steer, weight, width=vit_cfg.hidden_size)
  merger = TokenMerger(merge, proportional_attention=True, kind='tome')
  name, statistics = ('tome', ()) if by is None else (f'tome+{by.name}', by.statistics)
  return Pruner(name, None, tuple(counts), merger=merger, statistics=statistics)


def build_evit(vit_cfg: ViTConfig, *, keep_rate: float, layers: tuple[int, ...] = ()) -> Pruner:
  if not 0.0 < keep_rate <= 1.0:
    raise UserError(f"Pruner 'evit': keep_rate={keep_rate} must be in (0, 1].")
  layers = tuple(int(v) for v in layers) or merging.default_evit_layers(vit_cfg.num_layers)
  if any(not 0 <= v < vit_cfg.num_layers for v in layers):
    raise UserError(
      f"Pruner 'evit': layers={layers} must be block indices below {vit_cfg.num_layers}."
    )
  counts = merging.evit_counts(vit_cfg.num_tokens, vit_cfg.num_layers, keep_rate, layers)
  merger = TokenMerger(merging.evit_merge(keep_rate, layers), kind='evit')
  return Pruner('evit', None, tuple(counts), merger=merger, statistics=('cls_attention',))


MERGERS = ('tome', 'evit')
# The heuristics whose scores can steer ToMe (`build_tome`'s `steer`): every scoring one but
# random (noise) and greedy (cls_attention's score).
STEERS = (
  'cls_attention',
  'inverse_cls_attention',
  'cls_value_attention',
  'mean_attention',
  'similarity',
)

PRUNERS: dict[str, Callable[..., Pruner]] = {
  'none': build_none,
  'random': _scheduled('random', random_score, ()),
  'greedy': build_greedy,
  'cls_attention': _scheduled('cls_attention', cls_attention_score, ('cls_attention',)),
  'inverse_cls_attention': _scheduled(
    'inverse_cls_attention', inverse_cls_attention_score, ('cls_attention',)
  ),
  'cls_value_attention': _scheduled(
    'cls_value_attention', cls_value_attention_score, ('cls_value_attention',)
  ),
  'mean_attention': _scheduled('mean_attention', mean_attention_score, ('mean_attention',)),
  'similarity': _scheduled('similarity', similarity_score, ()),
  'tome': build_tome,
  'evit': build_evit,
}


def at_capacities(name: str, vit_cfg: ViTConfig, capacities: tuple[int, ...]) -> Pruner:
  """Heuristic `name` at given per-layer capacities (CLS included) instead of its schedule, so
  several methods run exactly the same token counts. `greedy` keeps its one-shot rule: the
  largest count after block 0 whose GFLOPs stay within the capacities'. UserError for 'none' or
  an unknown name."""
  if name not in PRUNERS or name == 'none' or name in MERGERS:
    heuristics = ', '.join(n for n in PRUNERS if n != 'none' and n not in MERGERS)
    raise UserError(
      f'No heuristic pruner {name!r} to run at given capacities; choose from: {heuristics}.'
    )
  capacities = tuple(int(c) for c in capacities)
  if len(capacities) != vit_cfg.num_layers:
    raise ValueError(f'need {vit_cfg.num_layers} capacities, got {len(capacities)}')
  if name == 'greedy':
    return _greedy(vit_cfg, matched_one_shot_keep(vit_cfg, list(capacities)))
  return dataclasses.replace(make_pruner(name, vit_cfg, r_max=0.0, alpha=1.0), budget=capacities)


def pruner_options(name: str) -> tuple[str, ...]:
  """The options (keyword arguments) the builder of `PRUNERS[name]` takes, in order."""
  params = inspect.signature(PRUNERS[name]).parameters.values()
  return tuple(p.name for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY)


def make_pruner(name: str, vit_cfg: ViTConfig, **options: Any) -> Pruner:
  """Builds the pruner `name` for a model geometry.

  Args:
    name: a key of `PRUNERS`.
    vit_cfg: the model the pruner runs on (its token count and depth fix the budget).
    **options: exactly the builder's options: `r_max` and `alpha` (seed 002's schedule) and
      optionally `schedule` for every scoring heuristic, `r` for tome, `keep_rate` (and
      optionally `layers`) for evit, none for `none`.

  Returns:
    The Pruner.

  Raises:
    UserError: (one line) for an unknown name, an unknown or missing option, or a bad option value.
  """
  if name not in PRUNERS:
    raise UserError(f'Unknown pruner {name!r}; choose from: {", ".join(PRUNERS)}.')
  valid = pruner_options(name)
  takes = ', '.join(valid) if valid else 'no options'
  unexpected = [k for k in options if k not in valid]
  if unexpected:
    raise UserError(f'Pruner {name!r} takes {takes}; got unexpected option {unexpected[0]!r}.')
  optional = {
    p.name
    for p in inspect.signature(PRUNERS[name]).parameters.values()
    if p.default is not inspect.Parameter.empty
  }
  missing = [k for k in valid if k not in options and k not in optional]
  if missing:
    raise UserError(f'Pruner {name!r} takes {takes}; option {missing[0]!r} is missing.')
  return PRUNERS[name](vit_cfg, **options)
