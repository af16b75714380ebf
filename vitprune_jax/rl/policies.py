"""Learned pruning policies: a typed spec, one registry entry per kind, loading and deployment.

A policy is an actor trained in one of two games over a frozen ViT (`POLICIES`):
- 'mappo' (RL4EViT, `pruning_env`): every kept patch token decides keep/prune at each pruning point;
- 'two_agent' (seed 000, `two_agent_env`): an attention agent and a similarity agent vote once on
  every token, at a target prune ratio.
A `PolicySpec` holds everything that defines the game and the networks; it is saved as the JSON meta
of the policy's checkpoint (`to_meta` / `from_meta`), so `load_policy` rebuilds the actor from the
checkpoint alone.

Deployment: at inference a policy is a `Pruner` whose score is the actor's keep logit (two_agent:
the logit of the vote's keep probability) at its pruning points. Decisions differ per image, so
compact execution needs a static capacity per layer. The two-agent policy is trained to meet a
target ratio, so its capacities are that target, filled by its scores (`threshold=None`). MAPPO's
are bucketed from what it keeps on validation images (`bucket_capacities`) and tokens it prunes stay
masked inside them (`threshold=0`); GFLOPs and throughput are those of the capacities, i.e. what
really runs. `deployed_pruner` is that recipe; `probe_pruner` is the uncapped mask-mode pruner whose
validation kept counts it needs (None when the capacities are fixed).

The checkpoint under `<workdir>/policy` holds params {'actor', 'critic'} and opt {'actor_opt_state',
'critic_opt_state', 'step'} (`to_checkpoint` / `from_checkpoint`) and the spec's meta.
"""

import math
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitprune_jax import checkpoints, parallel
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit
from vitprune_jax.pruning.pruners import Pruner, ScoreFn, with_merging
from vitprune_jax.rl import learner, networks, pruning_env, two_agent_env

Array = jax.Array
POLICY_DIR = 'policy'  # The policy's checkpoints, under a train_policy workdir.
META_FORMAT = 2  # Meta written by `PolicySpec.to_meta`; format 1 is the earlier train_policy's.
_KEEP_ALL = 1e9  # Score at layers without a pruning point: everything passes the threshold.


class PolicySpec(NamedTuple):
  """A learned policy's game and networks (defaults: configs/default.py's `game` and `ppo`)."""

  kind: str  # A key of POLICIES: 'mappo' | 'two_agent'.
  hidden_size: int = 64  # Width of the actor's and the critic's MLPs.
  points: tuple[int, ...] = ()  # Blocks after which the agents act (two_agent: exactly one).
  accuracy_weight: float = 1.0  # Weight of the shared accuracy reward.
  efficiency_weight: float = 0.03  # mappo: weight of a pruned token's efficiency reward.
  accuracy_clip: float = 5.0  # Floor on the log-probability change in the accuracy reward.
  target_prune_ratio: float = 0.5  # two_agent: share of the patches to prune...
  ratio_penalty: float = 2.0  # ...and the weight of the distance to it.
  vit_checkpoint: str = ''  # The ViT checkpoint the policy was trained on (for the record).
  action_mode: str = 'free'  # mappo: 'free' (each token alone) | 'budget' (exactly k_t kept).
  budget_schedule: str = 'geometric'  # mappo budget mode: k_t's schedule (pruning_env)...
  budget_alpha: float = 1.0  # ...its alpha (cls_attention)...
  budget_range: tuple[float, float] = (0.6, 0.9)  # ...and the range training samples b from.
  # mappo budget mode: pruned tokens merge into the kept ones (drop-merge), in the game and when
  # deployed (`pruning.with_merging`).
  merge_dropped: bool = False
  # mappo: weight of the similarity prior in the actor's logit (`networks.Actor`); 0 = none.
  similarity_prior: float = 0.0

  def to_meta(self) -> dict[str, Any]:
    """The JSON-able meta saved with the policy's checkpoint."""
    return dict(
      self._asdict(),
      points=list(self.points),
      budget_range=list(self.budget_range),
      format=META_FORMAT,
    )

  @classmethod
  def from_meta(cls, meta: dict[str, Any]) -> 'PolicySpec':
    """The spec of a saved meta: `to_meta`'s, or the earlier train_policy's.

    Format 1 (no 'format' key) has the keys kind, points (mappo) or point (two_agent),
    target_prune_ratio (two_agent), hidden_size, vit_checkpoint, alpha (the accuracy weight) and
    beta (the efficiency weight); accuracy_clip and ratio_penalty were not saved and take their
    defaults.
    """
    if meta.get('format', 1) == 1:
      meta = dict(
        meta,
        points=meta['points'] if 'points' in meta else [meta['point']],
        accuracy_weight=meta.get('alpha', cls._field_defaults['accuracy_weight']),
        efficiency_weight=meta.get('beta', cls._field_defaults['efficiency_weight']),
      )
    fields = {f: meta[f] for f in cls._fields if f in meta}
    spec = cls(**fields)
    return spec._replace(
      kind=str(spec.kind),
      hidden_size=int(spec.hidden_size),
      points=tuple(int(p) for p in spec.points),
      accuracy_weight=float(spec.accuracy_weight),
      efficiency_weight=float(spec.efficiency_weight),
      accuracy_clip=float(spec.accuracy_clip),
      target_prune_ratio=float(spec.target_prune_ratio),
      ratio_penalty=float(spec.ratio_penalty),
      vit_checkpoint=str(spec.vit_checkpoint),
      action_mode=str(spec.action_mode),
      budget_schedule=str(spec.budget_schedule),
      budget_alpha=float(spec.budget_alpha),
      budget_range=tuple(float(b) for b in spec.budget_range),
      merge_dropped=bool(spec.merge_dropped),
      similarity_prior=float(spec.similarity_prior),
    )

  def same_game(self, other: 'PolicySpec') -> bool:
    """Whether a run of `self` may resume `other`'s checkpoint.

    They need the same kind, network width and game structure (the kind's `game_fields`); reward
    weights may differ.
    """
    fields = ('kind', 'hidden_size') + policy_kind(self.kind).game_fields
    return all(getattr(self, f) == getattr(other, f) for f in fields)


class PolicyKind(NamedTuple):
  """What differs between the kinds of policy."""

  # (model, params, spec) -> the game the policy is trained in.
  make_env: Callable[[vit.VisionTransformer, Any, PolicySpec], learner.EnvFns]
  # (vit_cfg, actor, actor_params, spec, budget) -> the deployed score (higher = keep, threshold
  # 0); budget: the budget b a budget-mode policy is deployed at, else None.
  score_fn: Callable[[vit.ViTConfig, nn.Module, Any, PolicySpec, Optional[float]], ScoreFn]
  # (vit_cfg, spec) -> deployed capacities, or None: bucket them from validation kept counts.
  fixed_capacities: Callable[[vit.ViTConfig, PolicySpec], Optional[tuple[int, ...]]]
  # (vit_cfg, points) -> the checked points, () = the kind's default; ValueError if bad.
  resolve_points: Callable[[vit.ViTConfig, tuple[int, ...]], tuple[int, ...]]
  # Spec fields, besides kind and hidden_size, a resumed run must share with the checkpoint.
  game_fields: tuple[str, ...]


def _keep_all(keep_mask: Array) -> Array:
  return jnp.full(keep_mask.shape, _KEEP_ALL)


def budget_counts(vit_cfg: vit.ViTConfig, spec: PolicySpec, budget: float) -> tuple[int, ...]:
  """Patches kept at each pruning point of a budget-mode policy at budget b, as Python ints."""
  budget = pruning_env.check_budget(spec.budget_schedule, budget)
  counts = pruning_env.budget_counts(
    vit_cfg, spec.points, spec.budget_schedule, budget, spec.budget_alpha
  )
  return tuple(int(c) for c in np.asarray(counts))


def budget_capacities(vit_cfg: vit.ViTConfig, spec: PolicySpec, budget: float) -> tuple[int, ...]:
  """Tokens (CLS included) after each layer of a budget-mode policy at budget b: every token up
  to the first point, then 1 + k_t from point t on."""
  counts = budget_counts(vit_cfg, spec, budget)
  capacities, current = [], vit_cfg.num_tokens
  for layer in range(vit_cfg.num_layers):
    if layer in spec.points:
      current = 1 + counts[spec.points.index(layer)]
    capacities.append(current)
  return tuple(capacities)


def mappo_score_fn(
  vit_cfg: vit.ViTConfig,
  actor: nn.Module,
  actor_params: Any,
  spec: PolicySpec,
  budget: Optional[float] = None,
) -> ScoreFn:
  """Score = the actor's keep logit at the pruning points (same observation as in training; in
  budget mode with the targets of budget b)."""
  points = tuple(spec.points)
  counts = None
  if spec.action_mode == 'budget':
    if budget is None:
      raise ValueError('a budget-mode policy is deployed at a budget: pass budget=')
    counts = jnp.asarray(budget_counts(vit_cfg, spec, budget), jnp.int32)

  def score(layer: int, x: Array, keep_mask: Array, stats: vit.TokenStats, key: Array) -> Array:
    del key
    if layer not in points:
      return _keep_all(keep_mask)
    t = jnp.asarray(points.index(layer), jnp.int32)
    targets = None if counts is None else pruning_env.budget_targets(vit_cfg, counts, t)
    observe = lambda xi, ki, c, m: pruning_env.observe(
      vit_cfg, xi, ki, t, c, m, len(points), targets=targets
    )
    obs = jax.vmap(observe)(x, keep_mask, stats.cls_attention, stats.mean_attention)
    return actor.apply(actor_params, obs.obs)

  return score


def _two_agent_point(spec: PolicySpec) -> int:
  if len(spec.points) != 1:
    raise ValueError(f'a two_agent policy votes at exactly one point, got points={spec.points}')
  return spec.points[0]


def two_agent_score_fn(
  vit_cfg: vit.ViTConfig,
  actor: nn.Module,
  actor_params: Any,
  spec: PolicySpec,
  budget: Optional[float] = None,
) -> ScoreFn:
  """Score = logit of the probability that a token survives the vote (either agent votes keep).

  Thresholding it at 0 keeps the tokens more likely kept than not under the trained (stochastic)
  policy; taking each agent's own most likely vote instead would prune everything when both agents
  keep with p < 0.5.
  """
  del budget
  point = _two_agent_point(spec)

  def score(layer: int, x: Array, keep_mask: Array, stats: vit.TokenStats, key: Array) -> Array:
    del key
    if layer != point:
      return _keep_all(keep_mask)
    features = lambda xi, ki, c, m: two_agent_env.vote_features(
      vit_cfg, xi, ki, vit.TokenStats(c, m)
    )
    obs = jax.vmap(features)(x, keep_mask, stats.cls_attention, stats.mean_attention)
    logits = actor.apply(actor_params, obs)
    n = x.shape[1]
    # log P(both vote prune) = log(1 - sigmoid(a)) + log(1 - sigmoid(s));
    # score = log(P(keep) / P(prune)).
    log_prune = jax.nn.log_sigmoid(-logits[:, :n]) + jax.nn.log_sigmoid(-logits[:, n:])
    return jnp.log(-jnp.expm1(log_prune)) - log_prune

  return score


def _mappo_env(model: vit.VisionTransformer, params: Any, spec: PolicySpec) -> learner.EnvFns:
  return pruning_env.make_env(
    model,
    params,
    accuracy_weight=spec.accuracy_weight,
    efficiency_weight=spec.efficiency_weight,
    points=spec.points,
    accuracy_clip=spec.accuracy_clip,
    action_mode=spec.action_mode,
    budget_schedule=spec.budget_schedule,
    budget_alpha=spec.budget_alpha,
    merge_dropped=spec.merge_dropped,
  )


def _two_agent_env(model: vit.VisionTransformer, params: Any, spec: PolicySpec) -> learner.EnvFns:
  return two_agent_env.make_env(
    model,
    params,
    point=_two_agent_point(spec),
    accuracy_weight=spec.accuracy_weight,
    target_prune_ratio=spec.target_prune_ratio,
    ratio_penalty=spec.ratio_penalty,
    accuracy_clip=spec.accuracy_clip,
  )


def _mappo_points(vit_cfg: vit.ViTConfig, points: tuple[int, ...]) -> tuple[int, ...]:
  return pruning_env.check_points(
    vit_cfg.num_layers, points or pruning_env.default_points(vit_cfg.num_layers)
  )


def _two_agent_points(vit_cfg: vit.ViTConfig, points: tuple[int, ...]) -> tuple[int, ...]:
  if len(points) > 1:
    raise ValueError(f'a two_agent policy votes at exactly one point, got {points}')
  return (two_agent_env.check_point(vit_cfg.num_layers, points[0] if points else 0),)


POLICIES: dict[str, PolicyKind] = {
  'mappo': PolicyKind(
    make_env=_mappo_env,
    score_fn=mappo_score_fn,
    fixed_capacities=lambda vit_cfg, spec: None,
    resolve_points=_mappo_points,
    game_fields=(
      'points',
      'action_mode',
      'budget_schedule',
      'budget_alpha',
      'merge_dropped',
      'similarity_prior',
    ),
  ),
  'two_agent': PolicyKind(
    make_env=_two_agent_env,
    score_fn=two_agent_score_fn,
    fixed_capacities=lambda vit_cfg, spec: two_agent_env.target_capacities(
      vit_cfg, _two_agent_point(spec), spec.target_prune_ratio
    ),
    resolve_points=_two_agent_points,
    game_fields=('points', 'target_prune_ratio'),
  ),
}


def policy_kind(kind: str) -> PolicyKind:
  """`POLICIES[kind]`; an unknown kind is a one-line UserError."""
  if kind not in POLICIES:
    raise UserError(f'Unknown policy {kind!r}; choose one of: {", ".join(POLICIES)}.')
  return POLICIES[kind]


def make_spec(
  kind: str, vit_cfg: vit.ViTConfig, *, points: Sequence[int] = (), **fields: Any
) -> PolicySpec:
  """A checked PolicySpec for a ViT, its points resolved (() = the kind's default).

  Args:
    kind: a key of POLICIES.
    vit_cfg: the ViT the policy prunes (its depth bounds the points).
    points: mappo: blocks after which agents act, () = every block but the last; two_agent: one
      block, () = (0,).
    **fields: the other PolicySpec fields (hidden_size, accuracy_weight, ...); unset = default.

  Returns:
    The spec. An unknown kind or field, bad points, a hidden size below 1 or a target ratio outside
    [0, 1] is a one-line UserError.
  """
  policy = policy_kind(kind)
  unknown = sorted(set(fields) - set(PolicySpec._fields))
  if unknown:
    known = [f for f in PolicySpec._fields if f not in ('kind', 'points')]
    raise UserError(f'Unknown policy field {unknown[0]!r}; the fields are: {", ".join(known)}.')
  try:
    points = policy.resolve_points(vit_cfg, tuple(int(p) for p in points))
  except ValueError as e:
    raise UserError(f'Policy {kind!r}: {e}.') from e
  spec = PolicySpec(kind, points=points, **fields)
  if not (isinstance(spec.hidden_size, int) and spec.hidden_size >= 1):
    raise UserError(
      f'Policy {kind!r}: hidden_size must be an integer >= 1, got {spec.hidden_size!r}.'
    )
  if not 0.0 <= spec.target_prune_ratio <= 1.0:
    raise UserError(
      f'Policy {kind!r}: target_prune_ratio must be in [0, 1], got {spec.target_prune_ratio!r}.'
    )
  if spec.action_mode not in pruning_env.ACTION_MODES:
    raise UserError(
      f'Policy {kind!r}: action_mode must be one of {", ".join(pruning_env.ACTION_MODES)}, got '
      f'{spec.action_mode!r}.'
    )
  if spec.action_mode == 'budget':
    if kind != 'mappo':
      raise UserError(f'Policy {kind!r} has no budget mode; use action_mode=free.')
    if spec.budget_schedule not in pruning_env.BUDGET_SCHEDULES:
      raise UserError(
        f'Policy {kind!r}: budget_schedule must be one of '
        f'{", ".join(pruning_env.BUDGET_SCHEDULES)}, got {spec.budget_schedule!r}.'
      )
    low, high = (tuple(spec.budget_range) + (None, None))[:2]
    try:
      if len(spec.budget_range) != 2 or not low <= high:
        raise ValueError(f'budget_range must be (low, high) with low <= high, got {low}, {high}')
      spec = spec._replace(
        budget_range=tuple(pruning_env.check_budget(spec.budget_schedule, b) for b in (low, high))
      )
    except (TypeError, ValueError) as e:
      raise UserError(f'Policy {kind!r}: {e}.') from e
  if spec.similarity_prior and kind != 'mappo':
    raise UserError(f'Policy {kind!r} has no similarity prior; it is for mappo.')
  if spec.merge_dropped and spec.action_mode != 'budget':
    raise UserError(
      f'Policy {kind!r}: merge_dropped needs action_mode=budget (merging fills the capacities).'
    )
  return spec


def make_env(model: vit.VisionTransformer, params: Any, spec: PolicySpec) -> learner.EnvFns:
  """The game `spec` is trained in, over batches of {'image', 'label'} for the frozen ViT."""
  return policy_kind(spec.kind).make_env(model, params, spec)


def make_networks(spec: PolicySpec) -> tuple[networks.Actor, networks.Critic]:
  """The actor (with the similarity prior on the redundancy feature, `pruning_env.observe`) and
  the critic."""
  redundancy = pruning_env.REDUNDANCY_FEATURE - (2 if spec.action_mode == 'budget' else 0)
  actor = networks.Actor(spec.hidden_size, spec.similarity_prior, redundancy)
  return actor, networks.Critic(spec.hidden_size)


def sample_inputs(vit_cfg: vit.ViTConfig, num_envs: int = 1) -> dict[str, Array]:
  """Zero images and labels (and budgets of 1) shaped like the env inputs, to fix shapes."""
  shape = (num_envs, vit_cfg.image_size, vit_cfg.image_size, vit_cfg.num_channels)
  return {
    'image': jnp.zeros(shape, jnp.float32),
    'label': jnp.zeros((num_envs,), jnp.int32),
    'budget': jnp.ones((num_envs,), jnp.float32),
  }


def sample_obs(env: learner.EnvFns, vit_cfg: vit.ViTConfig) -> learner.EnvObs:
  """Zeros shaped like the env's first observation of one image (the ViT does not run)."""
  shapes = jax.eval_shape(lambda: env.reset(jax.random.PRNGKey(0), sample_inputs(vit_cfg))[1])
  return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def init_learner_state(
  key: Array,
  env: learner.EnvFns,
  actor: nn.Module,
  critic: nn.Module,
  ppo: learner.PPOConfig,
  vit_cfg: vit.ViTConfig,
  mesh: jax.sharding.Mesh,
) -> learner.LearnerState:
  """A fresh LearnerState for `env`, replicated over `mesh`.

  Args:
    key: PRNG key of the network initialisation.
    env: the policy's game (`make_env`), which fixes the feature sizes.
    actor: the actor network.
    critic: the critic network.
    ppo: the learner's hyper-parameters (the optimizers).
    vit_cfg: the ViT's geometry (the image shape).
    mesh: the device mesh.

  Returns:
    The LearnerState at step 0.
  """
  obs = sample_obs(env, vit_cfg)
  init = lambda k: learner.init_learner(k, ppo, actor, critic, obs)
  return jax.jit(init, out_shardings=parallel.replicated_sharding(mesh))(key)


def abstract_learner(
  env: learner.EnvFns,
  actor: nn.Module,
  critic: nn.Module,
  ppo: learner.PPOConfig,
  vit_cfg: vit.ViTConfig,
  mesh: jax.sharding.Mesh,
) -> learner.LearnerState:
  """The shapes, dtypes and (replicated) shardings of `init_learner_state`, computing nothing."""
  state = jax.eval_shape(
    lambda: learner.init_learner(
      jax.random.PRNGKey(0), ppo, actor, critic, sample_obs(env, vit_cfg)
    )
  )
  replicated = parallel.replicated_sharding(mesh)
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state
  )


def to_checkpoint(state: learner.LearnerState) -> tuple[dict[str, Any], dict[str, Any]]:
  """(params, opt) items of a policy checkpoint: the networks (what is reused) and the rest."""
  params = {'actor': state.actor_params, 'critic': state.critic_params}
  opt = {
    'actor_opt_state': state.actor_opt_state,
    'critic_opt_state': state.critic_opt_state,
    'step': state.step,
  }
  return params, opt


def from_checkpoint(params: dict[str, Any], opt: dict[str, Any]) -> learner.LearnerState:
  """The LearnerState of restored `to_checkpoint` items."""
  return learner.LearnerState(
    params['actor'], params['critic'], opt['actor_opt_state'], opt['critic_opt_state'], opt['step']
  )


def load_policy(
  path: str, model: vit.VisionTransformer, params: Any, mesh: jax.sharding.Mesh
) -> tuple[networks.Actor, Any, PolicySpec]:
  """Restores the policy a train_policy run saved under `<path>/policy`.

  Args:
    path: the train_policy workdir.
    model: the VisionTransformer the policy prunes.
    params: its parameters (they only fix shapes here).
    mesh: the device mesh (the actor params come back replicated).

  Returns:
    (actor, actor params, spec). A missing, unreadable or foreign checkpoint is a CheckpointError.
  """
  ckpt_dir, step, meta = checkpoints.read_meta(os.path.join(path, POLICY_DIR))
  try:
    spec = PolicySpec.from_meta(meta)
    env = make_env(model, params, spec)
  except (KeyError, TypeError, ValueError, UserError) as e:
    raise checkpoints.CheckpointError(
      f'{ckpt_dir} does not hold a policy for this ViT ({type(e).__name__}: {e}); point at '
      'another train_policy workdir.'
    ) from e
  actor, critic = make_networks(spec)
  abstract = abstract_learner(env, actor, critic, learner.PPOConfig(), model.config, mesh)
  restored = checkpoints.load_params(ckpt_dir, step, to_checkpoint(abstract)[0])
  return actor, restored['actor'], spec


def uncapped(vit_cfg: vit.ViTConfig) -> tuple[int, ...]:
  """Every token at every layer: the capacities of a policy that decides alone (mask mode)."""
  return (vit_cfg.num_tokens,) * vit_cfg.num_layers


def bucket_capacities(
  kept_counts: np.ndarray, num_tokens: int, quantile: float, bucket: int
) -> tuple[int, ...]:
  """Static per-layer capacities from per-image kept counts (images, layers).

  A quantile per layer, rounded up to a multiple of `bucket`, at least 2 (CLS and one patch) and
  never above the previous layer's (or `num_tokens`). ValueError unless 0 < quantile <= 1 and
  bucket >= 1.
  """
  if not 0.0 < quantile <= 1.0:
    raise ValueError(f'capacity quantile {quantile} must be in (0, 1]')
  if bucket < 1:
    raise ValueError(f'capacity bucket {bucket} must be >= 1')
  caps, previous = [], num_tokens
  for kept in np.quantile(np.asarray(kept_counts, np.float64), quantile, axis=0):
    cap = min(previous, max(2, bucket * math.ceil(kept / bucket)))
    caps.append(int(cap))
    previous = cap
  return tuple(caps)


def policy_pruner(
  spec: PolicySpec,
  vit_cfg: vit.ViTConfig,
  actor: nn.Module,
  actor_params: Any,
  capacities: Sequence[int],
  threshold: Optional[float] = 0.0,
  budget: Optional[float] = None,
) -> Pruner:
  """The policy as a Pruner named `spec.kind`.

  Args:
    spec: the policy.
    vit_cfg: the ViT it prunes.
    actor: the actor network.
    actor_params: its parameters.
    capacities: tokens (CLS included) that may stay after each layer.
    threshold: 0.0 = the policy's own decisions (greedy) inside the capacities; None = fill the
      capacities with the best-scored tokens.
    budget: budget mode: the budget b the actor observes (its capacities: `budget_capacities`).

  Returns:
    The Pruner.
  """
  score = policy_kind(spec.kind).score_fn(vit_cfg, actor, actor_params, spec, budget)
  pruner = Pruner(
    spec.kind,
    score,
    tuple(int(c) for c in capacities),
    threshold=threshold,
    statistics=pruning_env.OBSERVED_STATISTICS,
  )
  if spec.merge_dropped and threshold is None:  # Deployed as trained: named '<kind>+merge'.
    return with_merging(pruner)
  return pruner


def _fixed_capacities(spec: PolicySpec, vit_cfg: vit.ViTConfig, budget: Optional[float]):
  if spec.action_mode == 'budget':
    if budget is None:
      raise ValueError('a budget-mode policy is deployed at a budget: pass budget=')
    return budget_capacities(vit_cfg, spec, budget)
  return policy_kind(spec.kind).fixed_capacities(vit_cfg, spec)


def probe_pruner(
  spec: PolicySpec, vit_cfg: vit.ViTConfig, actor: nn.Module, actor_params: Any
) -> Optional[Pruner]:
  """The uncapped policy, to count what it keeps (mask mode, validation images); None if fixed.

  `deployed_pruner` buckets its capacities from those counts, unless they are fixed (two_agent's
  target, a budget-mode policy's budget), in which case there is nothing to count.
  """
  if spec.action_mode == 'budget' or policy_kind(spec.kind).fixed_capacities(vit_cfg, spec):
    return None
  return policy_pruner(spec, vit_cfg, actor, actor_params, uncapped(vit_cfg))


def deployed_pruner(
  spec: PolicySpec,
  vit_cfg: vit.ViTConfig,
  actor: nn.Module,
  actor_params: Any,
  kept_counts: Optional[np.ndarray] = None,
  *,
  quantile: float,
  bucket: int,
  budget: Optional[float] = None,
) -> Pruner:
  """The policy as it is deployed in compact execution.

  Args:
    spec: the policy.
    vit_cfg: the ViT it prunes.
    actor: the actor network.
    actor_params: its parameters.
    kept_counts: (images, layers) tokens `probe_pruner` kept on validation images; ignored (may be
      None) when the capacities are fixed.
    quantile: capacity quantile of the kept counts (see `bucket_capacities`).
    bucket: capacities are multiples of this.
    budget: budget mode: the budget b to deploy at.

  Returns:
    budget mode: the capacities of budget b filled by the actor's logits (threshold None), which is
    the policy's own greedy decision (top-k_t); two_agent: its target-ratio capacities, filled;
    free mappo: capacities bucketed from `kept_counts`, the policy's own decisions inside them
    (threshold 0). ValueError if free mappo's `kept_counts` or a budget-mode policy's budget is
    None.
  """
  fixed = _fixed_capacities(spec, vit_cfg, budget)
  if fixed is not None:
    return policy_pruner(spec, vit_cfg, actor, actor_params, fixed, threshold=None, budget=budget)
  if kept_counts is None:
    raise ValueError(f'a {spec.kind} policy needs the kept counts of its probe_pruner')
  capacities = bucket_capacities(kept_counts, vit_cfg.num_tokens, quantile, bucket)
  return policy_pruner(spec, vit_cfg, actor, actor_params, capacities, threshold=0.0)
