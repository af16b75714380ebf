"""The token-pruning Markov game (RL4EViT) as pure functions over a frozen ViT.

One episode = one image passing through the ViT. A pruning point follows each block listed in
`points` (default: every block but the last). At pruning point t every still-kept patch token is an
agent and chooses keep (1) or prune (0); CLS is always kept and is not an agent; a pruned token
stays pruned. The blocks up to the next pruning point then run on the survivors in mask mode, and
after the last point the rest of the ViT gives the logits. The ViT runs through its stage methods
(`model.apply(..., method='embed' | 'block' | 'readout')`). A batch of images is a batch of
environments: `reset_one`/`step_one` handle one image and are `vmap`-ed.

Observation of token i at point t (features F = D + 6): its embedding (no gradient flows into the
ViT), its CLS attention and mean received attention (both times N, so ~1 on average), its
redundancy (highest cosine similarity to another kept patch), t / T, the fraction of patches still
kept, and whether it is alive. Global state for the centralised critic (G = 2D + 2): mean embedding
of the kept tokens, the CLS embedding, t / T and the kept fraction.

Reward of token agent i of an image at point t (every agent's trajectory lasts the whole episode; a
pruned agent just stops acting), with w_e = `efficiency_weight`, w_a = `accuracy_weight`:

  r_i,t = w_e * s_t * [i prunes itself at t]                              (individual: efficiency)
        + w_a * max(log p(y | pruned) - log p(y | unpruned), -c) * [t = T-1]   (shared: accuracy)

where s_t = (L - 1 - p_t) / L is the share of the blocks a token pruned after block p_t no longer
runs, y is the true label, the unpruned log-probability comes from the same frozen ViT, and
c = `accuracy_clip`. The shared term makes the agents collaborate on the prediction; the individual
term makes each of them want to leave. Metric 'kept_compute' = 1 - mean_i s_i over the patches
(s_i of the point a patch was pruned at, 0 if kept): the share of the patch-block passes that ran.

Drop-merge game (`merge_dropped`, budget mode): the tokens pruned at a point are not lost but merge
into their most similar kept patch (`merging.merge_in_place`: size-weighted, sizes carried in the
state, proportional attention in later blocks), exactly as `pruning.with_merging` deploys it.

Constrained free mode (RCPO, Tessler et al., ICLR 2019): inputs['efficiency_weight'] (E,) overrides
w_e per image, so a training loop can make w_e a Lagrange multiplier on E[kept_compute] and move it
between updates (`rl.learner.lagrange_step`) until a compute target is met, without a w_e grid.

Action modes (`ACTION_MODES`):
- 'free' (RL4EViT): each agent decides alone, so the kept count varies per image.
- 'budget': at point t the agents jointly keep exactly k_t patches (a top-k draw, see
  `rl.learner`), k_t from a budget schedule (`budget_counts`) of a per-image budget b given with
  the inputs: 'geometric' keeps the share b of the remaining patches at each point (b = 0.7 gives
  the literature's 0.7 / 0.49 / 0.343), 'cls_attention' keeps seed 002's schedule with r_max = b.
  Compute is then fixed by b, so there is no efficiency reward (only the accuracy term), and the
  agents and the critic also observe the targets k_t / P and k_(t+1) / P (P patches; 0 after the
  last point), so one policy serves every budget.
"""

from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from vitprune_jax.models import vit
from vitprune_jax.pruning import merging, pruners
from vitprune_jax.rl.learner import EnvFns, EnvObs

Array = jax.Array


class PruningState(NamedTuple):
  x: Array  # (N, D) tokens after the last block run.
  keep: Array  # (N,) keep mask.
  t: Array  # Pruning point index.
  cls_attention: Array  # (N,) of the last block run.
  mean_attention: Array  # (N,)
  label: Array
  ref_log_prob: Array  # log p(y) of the unpruned ViT.
  correct: Array  # 1.0 if the pruned prediction is right (set at the last step).
  counts: Array  # (T,) int32 patches kept at each point (budget mode; free mode: all of them).
  saved: Array  # (N,) share of the blocks each token no longer runs (s_t of its pruning point).
  efficiency_weight: Array  # w_e of this image (free mode; a constrained run's multiplier).
  size: Array  # (N,) patches each token stands for (drop-merge; all ones otherwise).
  metric: Array  # (N, head_dim) keys of the last block run, averaged over heads (drop-merge).


ACTION_MODES = ('free', 'budget')
# What the agents observe of a block (`observe`), so what a learned policy's forward computes.
OBSERVED_STATISTICS = ('cls_attention', 'mean_attention')
BUDGET_SCHEDULES = ('geometric', 'cls_attention')
# Index of the redundancy column in a free-mode token's features (budget mode appends 2 after it).
REDUNDANCY_FEATURE = -4


def budget_counts(
  vit_cfg: vit.ViTConfig, points: Sequence[int], schedule: str, budget: Any, alpha: float = 1.0
) -> Array:
  """Patches (T,) int32 kept at each pruning point under budget b (a float or a traced scalar).

  'geometric': floor(P * b^(t+1)) at the t-th point; 'cls_attention': seed 002's per-layer
  schedule (`pruning.schedules.tokens_per_layer`) with r_max = b and `alpha`, read after each
  point's block. At least one patch; never more than at the point before. Computed in float32
  with jnp, so training (traced per-image budgets) and deployment (a Python float) agree.
  """
  p = vit_cfg.num_patches
  b = jnp.asarray(budget, jnp.float32)
  if schedule == 'geometric':
    kept = [jnp.floor(p * b ** (t + 1) + 1e-4) for t in range(len(points))]
  elif schedule == 'cls_attention':
    patches, per_layer = jnp.asarray(p, jnp.float32), []
    for layer in range(vit_cfg.num_layers):
      ratio = 1.0 - b * ((layer + 1) / vit_cfg.num_layers) ** alpha
      patches = jnp.maximum(1.0, jnp.floor(patches * ratio + 1e-4))
      per_layer.append(patches)
    kept = [per_layer[q] for q in points]
  else:
    raise ValueError(f'budget schedule must be one of {BUDGET_SCHEDULES}, got {schedule!r}')
  kept = jnp.clip(jnp.stack(kept), 1, p)
  return jax.lax.cummin(kept).astype(jnp.int32)


def check_budget(schedule: str, budget: float) -> float:
  """`budget` as a float; ValueError unless it lies in (0, 1] (geometric) or [0, 1] (r_max)."""
  budget = float(budget)
  low_ok = budget > 0.0 if schedule == 'geometric' else budget >= 0.0
  if not (low_ok and budget <= 1.0):
    bounds = '(0, 1]' if schedule == 'geometric' else '[0, 1]'
    raise ValueError(f'a {schedule} budget must be in {bounds}, got {budget}')
  return budget


def default_points(num_layers: int) -> tuple[int, ...]:
  """Every block but the last (after the last block only the head reads CLS)."""
  return tuple(range(num_layers - 1))


def check_points(num_layers: int, points: Sequence[int]) -> tuple[int, ...]:
  """`points` as a tuple; ValueError unless they are increasing block indices below the last."""
  points = tuple(int(p) for p in points)
  if (
    not points
    or any(not 0 <= p < num_layers - 1 for p in points)
    or list(points) != sorted(set(points))
  ):
    raise ValueError(
      f'pruning points must be increasing block indices below {num_layers - 1}, got {points}'
    )
  return points


def num_features(vit_cfg: vit.ViTConfig, action_mode: str = 'free') -> int:
  return vit_cfg.hidden_size + (8 if action_mode == 'budget' else 6)


def embed_one(model: vit.VisionTransformer, params: Any, image: Array) -> Array:
  """Tokens (N, D) of one image (H, W, C), as block 0 sees them."""
  return model.apply({'params': params}, image[None], method='embed')[0]


def readout_one(model: vit.VisionTransformer, params: Any, x: Array) -> Array:
  """Logits (classes,) from the tokens (N, D) of one image after the last block."""
  return model.apply({'params': params}, x[None], method='readout')[0]


def run_blocks(
  model: vit.VisionTransformer,
  params: Any,
  x: Array,
  keep: Array,
  layers: Sequence[int],
  size: Optional[Array] = None,
) -> tuple[Array, Any, Optional[Array]]:
  """Blocks `layers` on one image's tokens (N, D) under keep mask (N,) (a batch of 1 inside);
  with `size` (N,), proportional attention to merged tokens (`vit.merging_block`).

  Returns the tokens, the last block's `TokenStats` (batch axis kept; None if `layers` is empty)
  and, with `size`, its metric (N, head_dim) (else None).
  """
  stats = metric = None
  for i, layer in enumerate(layers):
    # Only the last block's statistics are read: the blocks before it run fused attention.
    wanted = OBSERVED_STATISTICS if i == len(layers) - 1 else ()
    if size is None:
      x, stats = model.apply(
        {'params': params}, layer, x[None], keep[None], statistics=wanted, method='block'
      )
    else:
      x, stats, metric = model.apply(
        {'params': params},
        layer,
        x[None],
        keep[None],
        size[None],
        statistics=wanted,
        method='merging_block',
      )
      metric = metric[0]
    x = x[0]
  return x, stats, metric


def observe(
  vit_cfg: vit.ViTConfig,
  x: Array,
  keep: Array,
  t: Array,
  cls_attention: Array,
  mean_attention: Array,
  num_points: int,
  targets: Optional[Array] = None,
  choose: Optional[Array] = None,
) -> EnvObs:
  """Agents' observations and the critic's state of one image.

  Scales use the full token count, so the same observation comes out in mask mode (N slots) and
  compact mode (fewer slots holding the same kept tokens).

  Args:
    vit_cfg: the ViT's geometry.
    x: tokens (slots, D).
    keep: keep mask (slots,).
    t: pruning point index (int32 scalar).
    cls_attention: (slots,) of the last block run.
    mean_attention: (slots,) of the last block run.
    num_points: T, the number of pruning points.
    targets: budget mode: (2,) the kept fractions due at this point and the next, appended to every
      token's features and to the global state; None = free mode.
    choose: budget mode: the patches to keep at this point (`EnvObs.choose`).

  Returns:
    EnvObs without the env axis: obs (slots, D + 6 [+ 2]), global_state (2D + 2 [+ 2],), alive,
    acting (slots,) and choose (budget mode).
  """
  n = vit_cfg.num_tokens
  x = jax.lax.stop_gradient(x.astype(jnp.float32))
  slots = x.shape[0]
  redundancy = -pruners.similarity_score(0, x[None], keep[None], None, None)[0]
  frac = jnp.sum(keep[1:]) / (n - 1)
  t_frac = t.astype(jnp.float32) / num_points
  columns = [  # Redundancy at REDUNDANCY_FEATURE.
    cls_attention * n,
    mean_attention * n,
    redundancy,
    jnp.full((slots,), t_frac),
    jnp.full((slots,), frac),
    keep,
  ]
  shared = [t_frac, frac]
  if targets is not None:
    columns += [jnp.full((slots,), targets[0]), jnp.full((slots,), targets[1])]
    shared += [targets[0], targets[1]]
  obs = jnp.concatenate([x, jnp.stack(columns, axis=-1)], axis=-1)
  pooled = jnp.sum(x * keep[:, None], axis=0) / jnp.maximum(jnp.sum(keep), 1.0)
  global_state = jnp.concatenate([pooled, x[0], jnp.stack(shared)])
  # Every patch token stays in the episode (it shares the final reward); only kept ones still
  # decide. CLS is not an agent.
  alive = jnp.ones_like(keep).at[0].set(0.0)
  return EnvObs(
    obs=obs, global_state=global_state, alive=alive, acting=keep.at[0].set(0.0), choose=choose
  )


def budget_targets(vit_cfg: vit.ViTConfig, counts: Array, t: Array) -> Array:
  """(2,) the kept fractions k_t / P and k_(t+1) / P (0 after the last point) of counts (T,)."""
  fractions = jnp.concatenate([counts.astype(jnp.float32), jnp.zeros((1,))]) / vit_cfg.num_patches
  return jnp.stack([fractions[t], fractions[t + 1]])


def _observe_state(
  vit_cfg: vit.ViTConfig, state: PruningState, num_points: int, budget: bool
) -> EnvObs:
  t = jnp.minimum(state.t, num_points - 1)
  return observe(
    vit_cfg,
    state.x,
    state.keep,
    state.t,
    state.cls_attention,
    state.mean_attention,
    num_points,
    targets=budget_targets(vit_cfg, state.counts, t) if budget else None,
    choose=state.counts[t] if budget else None,
  )


def make_env(
  model: vit.VisionTransformer,
  params: Any,
  *,
  accuracy_weight: float,
  efficiency_weight: float,
  points: Sequence[int] = (),
  accuracy_clip: float = 5.0,
  action_mode: str = 'free',
  budget_schedule: str = 'geometric',
  budget_alpha: float = 1.0,
  merge_dropped: bool = False,
) -> EnvFns:
  """The game over batches of {'image': (E, H, W, C), 'label': (E,)} for the frozen ViT.

  Budget mode also needs 'budget': (E,) float32, each image's budget b (see `budget_counts`).
  Free mode takes an optional 'efficiency_weight': (E,) float32, each image's w_e (default: the
  argument).

  Args:
    model: the VisionTransformer.
    params: its parameters (frozen: no gradient flows into them).
    accuracy_weight: w_a, weight of the shared accuracy reward.
    efficiency_weight: w_e, weight of each pruned token's efficiency reward.
    points: blocks after which the agents act; () = every block but the last.
    accuracy_clip: c, floor on the log-probability change in the accuracy reward.
    action_mode: 'free' or 'budget' (`ACTION_MODES`).
    budget_schedule: budget mode: 'geometric' or 'cls_attention' (`BUDGET_SCHEDULES`).
    budget_alpha: the cls_attention schedule's alpha.
    merge_dropped: the tokens pruned at a point merge into their most similar kept patch
      (`merging.merge_in_place`, as `pruning.with_merging` deploys it) instead of being dropped;
      sizes are carried and later blocks run proportional attention.

  Returns:
    The EnvFns (T = len(points) steps), with metrics 'kept_fraction', 'kept_compute' and
    'accuracy'.
    Bad points, modes or schedules are a ValueError.
  """
  if action_mode not in ACTION_MODES:
    raise ValueError(f'action mode must be one of {ACTION_MODES}, got {action_mode!r}')
  if budget_schedule not in BUDGET_SCHEDULES:
    raise ValueError(f'budget schedule must be one of {BUDGET_SCHEDULES}, got {budget_schedule!r}')
  budget_mode = action_mode == 'budget'
  if budget_mode:  # The budget fixes the compute: only the accuracy term is left.
    efficiency_weight = 0.0
  vit_cfg = model.config
  points = check_points(vit_cfg.num_layers, tuple(points) or default_points(vit_cfg.num_layers))
  num_points = len(points)
  params = jax.lax.stop_gradient(params)
  # Segment j runs the blocks after point j up to point j+1 (the last one: to the end, then the
  # head).
  segments = [range(points[j] + 1, points[j + 1] + 1) for j in range(num_points - 1)]
  segments.append(range(points[-1] + 1, vit_cfg.num_layers))
  saved_share = jnp.asarray(
    [(vit_cfg.num_layers - 1 - p) / vit_cfg.num_layers for p in points], jnp.float32
  )

  def reset_one(
    image: Array, label: Array, budget: Array, weight: Array
  ) -> tuple[PruningState, EnvObs]:
    keep = jnp.ones((vit_cfg.num_tokens,), jnp.float32)
    if budget_mode:
      counts = budget_counts(vit_cfg, points, budget_schedule, budget, budget_alpha)
    else:
      counts = jnp.full((num_points,), vit_cfg.num_patches, jnp.int32)
    x0 = embed_one(model, params, image)
    size = jnp.ones((vit_cfg.num_tokens,), jnp.float32)
    x, stats, metric = run_blocks(
      model, params, x0, keep, range(points[0] + 1), size if merge_dropped else None
    )
    full, _, _ = run_blocks(model, params, x, keep, range(points[0] + 1, vit_cfg.num_layers))
    ref = jax.nn.log_softmax(readout_one(model, params, full))[label]
    state = PruningState(
      x=x,
      keep=keep,
      t=jnp.zeros((), jnp.int32),
      cls_attention=stats.cls_attention[0],
      mean_attention=stats.mean_attention[0],
      label=label,
      ref_log_prob=ref,
      correct=jnp.zeros(()),
      counts=counts,
      saved=jnp.zeros((vit_cfg.num_tokens,), jnp.float32),
      efficiency_weight=jnp.asarray(weight, jnp.float32),
      size=size,
      metric=jnp.zeros((vit_cfg.num_tokens, vit_cfg.hidden_size // vit_cfg.num_heads))
      if metric is None
      else metric,
    )
    return state, _observe_state(vit_cfg, state, num_points, budget_mode)

  def step_one(
    state: PruningState, action: Array, t: int
  ) -> tuple[PruningState, EnvObs, Array, Array]:
    """Pruning point t (a Python int: every image is at the same point) on one image."""
    deciding = state.keep.at[0].set(0.0)
    keep = state.keep * jnp.where(deciding > 0, (action > 0).astype(jnp.float32), 1.0)
    pruned_now = deciding * (1.0 - keep)
    x, size = state.x, None
    if merge_dropped:
      receives = (keep > 0).at[0].set(False)
      x, size = merging.merge_in_place(x, state.size, pruned_now > 0, receives, state.metric)
    x, stats, metric = run_blocks(model, params, x, keep, segments[t], size)
    last = t == num_points - 1
    if last:
      logits = readout_one(model, params, x)
      cls_att = mean_att = jnp.zeros((vit_cfg.num_tokens,), jnp.float32)
      log_prob = jax.nn.log_softmax(logits)[state.label]
      accuracy = accuracy_weight * jnp.maximum(log_prob - state.ref_log_prob, -accuracy_clip)
      correct = (jnp.argmax(logits) == state.label).astype(jnp.float32)
    else:
      cls_att, mean_att = stats.cls_attention[0], stats.mean_attention[0]
      accuracy, correct = jnp.zeros(()), state.correct
    # Every token agent (CLS excluded) shares the accuracy term, pruned ones included.
    saved = saved_share[t] * pruned_now
    reward = (state.efficiency_weight * saved + accuracy).at[0].set(0.0)
    new = state._replace(
      x=x,
      keep=keep,
      t=state.t + 1,
      cls_attention=cls_att,
      mean_attention=mean_att,
      correct=correct,
      saved=state.saved + saved,
      size=state.size if size is None else size,
      metric=state.metric if metric is None else metric,
    )
    done = jnp.full((vit_cfg.num_tokens,), float(last))
    info_obs = _observe_state(
      vit_cfg, new._replace(t=jnp.minimum(new.t, num_points - 1)), num_points, budget_mode
    )
    return new, info_obs, reward, done

  def reset(key: Array, inputs: dict[str, Array]) -> tuple[PruningState, EnvObs]:
    del key
    if budget_mode and 'budget' not in inputs:
      raise ValueError("a budget-mode game needs inputs['budget'], one budget per image")
    ones = jnp.ones(inputs['label'].shape, jnp.float32)
    budget = inputs.get('budget', ones)
    # Budget mode has no efficiency reward (efficiency_weight is 0), whatever the inputs say.
    weight = (
      efficiency_weight * ones
      if budget_mode
      else inputs.get('efficiency_weight', efficiency_weight * ones)
    )
    return jax.vmap(reset_one)(inputs['image'], inputs['label'], budget, weight)

  def step_at(t: int):
    """The step at pruning point t: only segment t of the ViT runs."""

    def step(key: Array, state: PruningState, actions: Array):
      del key
      return jax.vmap(lambda s, a: step_one(s, a, t))(state, actions)

    return step

  def step(
    key: Array, state: PruningState, actions: Array
  ) -> tuple[PruningState, EnvObs, Array, Array]:
    # Every image is at the same point, so the index is one unbatched scalar: a real conditional
    # that runs one segment (a per-image index under vmap would run every segment).
    return jax.lax.switch(state.t[0], [step_at(t) for t in range(num_points)], key, state, actions)

  def metrics(state: PruningState) -> dict[str, Array]:
    kept = jnp.sum(state.keep[:, 1:], -1) / (vit_cfg.num_tokens - 1)
    return {
      'kept_fraction': jnp.mean(kept),
      'kept_compute': 1.0 - jnp.mean(state.saved[:, 1:]),
      'accuracy': jnp.mean(state.correct),
    }

  return EnvFns(reset=reset, step=step, num_steps=num_points, metrics=metrics, step_at=step_at)
