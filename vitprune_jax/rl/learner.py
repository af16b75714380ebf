"""Multi-agent PPO (MAPPO) with parameter sharing, as small pure functions.

The learner knows nothing about tokens: an environment is a pair of pure functions (`EnvFns`) over
a batch of E envs with A agent slots each, and agents appear and die through the `alive` mask. One
update is rollout (lax.scan over T, or unrolled when the env's steps differ: `EnvFns.step_at`) ->
GAE (reverse lax.scan) -> advantage normalisation -> update_epochs x num_minibatches Adam steps
(lax.scan inside lax.scan) over the (step, env) units of the rollout, each unit all A agents of one
env at one step. Every mean is weighted by `alive`, so dead agent slots keep shapes static and
contribute nothing. The hyper-parameters are one explicit `PPOConfig`.

Two action modes, fixed by the env's observations:
- free (`EnvObs.choose` None): each acting agent decides alone, keep (1) or not (0), Bernoulli on
  its logit; the PPO ratio is per agent.
- joint top-k (`choose` = k per env): the acting agents jointly keep exactly k of themselves,
  drawn without replacement from their logits (Gumbel-top-k). The action of an agent is its rank
  in the draw (1..k; 0 = not kept), and the draw's log-probability is Plackett-Luce:
    log P(order) = sum_j [s_(j) - logsumexp(s of the candidates not drawn before j)].
  The term of rank j belongs to the agent drawn j-th, so the terms of one unit sum to the log-
  probability of the ordered draw (Kool et al., 2019; the unordered set's is a sum over k!
  orders). Each kept agent's PPO ratio is that of its own term (as token-level PPO on a sequence),
  which at ratio 1 gives exactly the gradient of the joint log-probability; the agents not kept
  have no term of their own and only appear in the denominators. The entropy bonus is that of the
  first draw (a softmax over the candidates).

Data parallelism (`make_sharded_update`, shard_map over the mesh's data axis): each device plays
its own envs, computes their GAE, shuffles and cuts their units, and runs the minibatch steps on
them; only scalar sums (the counts and totals behind every mean) and the gradients are summed over
devices. Actions are drawn per env (`fold_in(key, env index)`) and minibatches are stratified by
groups of envs, so 1 device and N devices compute the same update, and no device holds the global
batch.
"""

import math
from typing import Any, Callable, NamedTuple, Optional

import distrax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

Array = jax.Array


class PPOConfig(NamedTuple):
  """The learner's hyper-parameters (defaults: configs/default.py's `ppo` section)."""

  actor_lr: float = 3e-4  # Adam learning rate of the actor.
  critic_lr: float = 1e-3  # Adam learning rate of the critic.
  gamma: float = 0.99  # Discount.
  gae_lambda: float = 0.95  # GAE lambda.
  clip_eps: float = 0.2  # PPO ratio clip.
  value_clip_eps: float = 0.0  # Value-function clip around the rollout's values; 0 = no clip.
  entropy_coef: float = 0.01
  value_coef: float = 0.5
  max_grad_norm: float = 1.0  # Global-norm gradient clip, per network.
  update_epochs: int = 4  # PPO epochs per update.
  num_minibatches: int = 4  # Per epoch, over the (step, env) units of the rollout.
  normalize_advantages: bool = True
  # K > 1: every env input is played K times (different draws) and the advantage of a sample is
  # its discounted return-to-go minus the mean of the same agent slot's in the other K - 1 plays
  # (a leave-one-out baseline; the critic then only learns values). 1 = GAE with the critic.
  rollouts_per_input: int = 1


class EnvObs(NamedTuple):
  obs: Array  # (E, A, F) per-agent observation.
  global_state: Array  # (E, G) centralised state for the critic.
  alive: Array  # (E, A) float 1/0: the agent is in the episode (its rewards and value count).
  # (E, A) float 1/0: the agent decides at this step; None = every alive agent. An agent can stay in
  # the episode without deciding (a pruned token still shares the image's final accuracy reward).
  acting: Optional[Array] = None
  # (E,) int32: the acting agents jointly keep exactly this many of themselves (top-k mode, see
  # the module doc); None = each decides alone (free mode). Must not exceed the acting count.
  choose: Optional[Array] = None


class EnvFns(NamedTuple):
  """A batched env. `step` must ignore the actions of dead agents and give them reward 0."""

  # (key, inputs) -> (env_state, obs); inputs lead with E.
  reset: Callable[[Array, Any], tuple[Any, EnvObs]]
  # (key, env_state, actions (E, A) int32) -> (env_state, next_obs, reward (E, A), done (E, A));
  # done = 1 at the step after which the agent's trajectory ends. An action > 0 is "keep" (free
  # mode: 1; top-k mode: the agent's rank in the draw).
  step: Callable[[Array, Any, Array], tuple[Any, EnvObs, Array, Array]]
  num_steps: int  # Fixed episode length T (static).
  # Final env state -> scalar metrics to log.
  metrics: Optional[Callable[[Any], dict[str, Array]]] = None
  # Optional: t -> the `step` of step t alone (t a Python int). Envs whose steps do different work
  # (the pruning game runs a different ViT segment at each point) give it, and the rollout then
  # unrolls its T steps, so each step's program holds only its own work.
  step_at: Optional[Callable[[int], Callable[[Array, Any, Array], Any]]] = None


class Transition(NamedTuple):
  """One rollout step; the rollout scan stacks them, so every field leads with T."""

  obs: Array  # (T, E, A, F)
  global_state: Array  # (T, E, G)
  action: Array  # (T, E, A) int32
  log_prob: Array  # (T, E, A) log-probability of `action` under the rollout policy.
  value: Array  # (T, E, A) critic value at rollout time (centre of the value clip).
  reward: Array  # (T, E, A)
  alive: Array  # (T, E, A)
  done: Array  # (T, E, A)
  acting: Array  # (T, E, A): weights the policy loss: deciding (free) or kept by the draw (top-k).
  candidates: Array  # (T, E, A): deciding (the pool a top-k draw is taken from).


class RolloutInfo(NamedTuple):
  """What a rollout leaves besides its transitions."""

  last_value: Array  # (E, A) critic value of the final obs, 0 where dead (the GAE bootstrap).
  env_state: Any  # The final env state (for the env's metrics).
  top_k: bool = False  # Static: the env's agents draw jointly (EnvObs.choose was set).


class Batch(NamedTuple):
  """What the PPO loss needs per sample: leading (..., A) (units of A agents in the update), or any
  leading shape in free mode."""

  obs: Array  # (..., A, F)
  global_state: Array  # (..., A, G), or without the agent axis (see networks.Critic).
  action: Array
  log_prob: Array  # Free: log pi(action); top-k: the agent's Plackett-Luce term (0 if not kept).
  value: Array
  advantage: Array
  target: Array  # Value target (GAE return).
  alive: Array  # Weight of the value loss: 1 alive, 0 dead.
  acting: Array  # Weight of the policy loss and entropy: 1 if the agent decided (top-k: was kept).
  candidates: Optional[Array] = None  # Top-k mode: (..., A) the pool of the draw; None = free.


class LearnerState(NamedTuple):
  actor_params: Any
  critic_params: Any
  actor_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  step: Array  # int32 scalar: updates done.


def _masked_mean(x: Array, mask: Array, count: Optional[Array] = None) -> Array:
  """Mean over the mask-1 entries; an all-dead batch gives 0, not NaN.

  With `count` (the mask's sum over every device) it is this device's share of the global mean:
  summed over devices, the shares give the mean over the whole batch.
  """
  count = jnp.sum(mask) if count is None else count
  return jnp.sum(x * mask) / jnp.maximum(count, 1.0)


def _psum(tree: Any, axis_name: Optional[str]) -> Any:
  """Sum over the devices of `axis_name` (inside shard_map); the identity on one program."""
  return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def _global_mean(x: Array, mask: Array, axis_name: Optional[str]) -> Array:
  """Masked mean over the samples of every device."""
  total, count = _psum((jnp.sum(x * mask), jnp.sum(mask)), axis_name)
  return total / jnp.maximum(count, 1.0)


_MASKED_LOGIT = -1e9  # Stands for -inf in masked softmaxes (finite, so gradients stay finite).


def plackett_luce_terms(logits: Array, rank: Array, candidates: Array) -> Array:
  """Per-agent terms (A,) of the Plackett-Luce log-probability of one ordered top-k draw.

  The agent drawn j-th (rank j >= 1) gets s_i - logsumexp of the candidates not drawn before it
  (itself, those drawn later and those never drawn); agents not drawn (rank 0) get 0. The terms
  sum to log P(order). One example; vmap outside.

  Args:
    logits: (A,) the agents' logits s.
    rank: (A,) int, 1..k for the drawn agents in draw order, 0 for the others.
    candidates: (A,) 1/0, the pool of the draw (every drawn agent is a candidate).
  """
  drawn = rank > 0
  remaining = (candidates[None, :] > 0) & ((rank[None, :] == 0) | (rank[None, :] >= rank[:, None]))
  # Rows of agents not drawn see every agent: finite, and masked out below.
  remaining = remaining | ~drawn[:, None]
  denominator = jax.nn.logsumexp(jnp.where(remaining, logits[None, :], _MASKED_LOGIT), axis=-1)
  return jnp.where(drawn, logits - denominator, 0.0)


def sample_top_k(key: Array, logits: Array, candidates: Array, k: Array) -> Array:
  """Ranks (A,) int32 of a Gumbel-top-k draw of k candidates without replacement (0 = not drawn).

  argsort(-(s + Gumbel)) over the candidates is a Plackett-Luce sample of their order; the first k
  are kept. One example; vmap outside.
  """
  perturbed = jnp.where(candidates > 0, logits + jax.random.gumbel(key, logits.shape), -jnp.inf)
  position = jnp.argsort(jnp.argsort(-perturbed))  # 0 = drawn first.
  return jnp.where((position < k) & (candidates > 0), position + 1, 0).astype(jnp.int32)


def first_draw_entropy(logits: Array, candidates: Array) -> Array:
  """Entropy of the first draw of a top-k sample: softmax over the candidates (..., A) -> (...)."""
  log_p = jax.nn.log_softmax(jnp.where(candidates > 0, logits, _MASKED_LOGIT), axis=-1)
  return -jnp.sum(jnp.where(candidates > 0, jnp.exp(log_p) * log_p, 0.0), axis=-1)


def _log_prob_and_entropy(
  logits: Array, action: Array, candidates: Optional[Array]
) -> tuple[Array, Array]:
  """Per-agent log-probability terms and entropies, leading (..., A): Bernoulli (candidates None)
  or Plackett-Luce terms with the first draw's entropy broadcast to every agent."""
  if candidates is None:
    pi = distrax.Bernoulli(logits=logits, dtype=jnp.int32)
    return pi.log_prob(action), pi.entropy()
  flat = lambda x: x.reshape((-1, x.shape[-1]))
  terms = jax.vmap(plackett_luce_terms)(flat(logits), flat(action), flat(candidates))
  entropy = first_draw_entropy(logits, candidates)
  return terms.reshape(logits.shape), jnp.broadcast_to(entropy[..., None], logits.shape)


def create_optimizers(
  ppo: PPOConfig,
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """(actor, critic) Adam after global-norm clipping: separate, so each net has its own rate."""
  make = lambda lr: optax.chain(
    optax.clip_by_global_norm(ppo.max_grad_norm), optax.adam(lr, eps=1e-5)
  )
  return make(ppo.actor_lr), make(ppo.critic_lr)


def init_learner(
  key: Array, ppo: PPOConfig, actor: nn.Module, critic: nn.Module, sample_obs: EnvObs
) -> LearnerState:
  """Fresh params and optimizer states; `sample_obs` only fixes the feature sizes (any E, A)."""
  actor_key, critic_key = jax.random.split(key)
  actor_params = actor.init(actor_key, sample_obs.obs)
  critic_params = critic.init(critic_key, sample_obs.global_state, sample_obs.obs)
  actor_tx, critic_tx = create_optimizers(ppo)
  return LearnerState(
    actor_params,
    critic_params,
    actor_tx.init(actor_params),
    critic_tx.init(critic_params),
    jnp.zeros((), jnp.int32),
  )


def rollout(
  key: Array,
  learner_state: LearnerState,
  env: EnvFns,
  actor: nn.Module,
  critic: nn.Module,
  inputs: Any,
  env_ids: Optional[Array] = None,
) -> tuple[Transition, RolloutInfo]:
  """Plays one episode of length T in every env with the current policy.

  Args:
    key: PRNG key of the episode (env reset, actions, env steps).
    learner_state: the policy (actor params) and the critic that values each step.
    env: the batched env.
    actor: the actor network.
    critic: the critic network.
    inputs: the env's inputs (E leading), e.g. a batch of images.
    env_ids: (E,) global index of each env (default 0..E-1): env i's actions are drawn with
      `fold_in(key, env_ids[i])`, so they do not depend on how the envs are split over devices.

  Returns:
    The stacked transitions (T leading) and a `RolloutInfo`.
  """
  reset_key, scan_key = jax.random.split(key)
  env_state, obs = env.reset(reset_key, inputs)
  if env_ids is None:
    env_ids = jnp.arange(obs.obs.shape[0])

  def sample(act_key: Array, logits: Array, obs: EnvObs) -> tuple[Array, Array, Array]:
    """(action, log-prob terms, policy weight), each (E, A), of the actions of every env."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(act_key, env_ids)
    candidates = obs.alive if obs.acting is None else obs.acting
    if obs.choose is None:
      draw = lambda k, lg: distrax.Bernoulli(logits=lg, dtype=jnp.int32).sample_and_log_prob(seed=k)
      action, log_prob = jax.vmap(draw)(keys, logits)
      return action, log_prob, candidates
    action = jax.vmap(sample_top_k)(keys, logits, candidates, obs.choose)
    log_prob = jax.vmap(plackett_luce_terms)(logits, action, candidates)
    return action, log_prob, (action > 0).astype(jnp.float32)

  def step_fn(carry, step_key, step=env.step):
    env_state, obs = carry
    act_key, env_key = jax.random.split(step_key)
    logits = actor.apply(learner_state.actor_params, obs.obs)
    action, log_prob, acting = sample(act_key, logits, obs)
    value = critic.apply(learner_state.critic_params, obs.global_state, obs.obs)
    env_state, next_obs, reward, done = step(env_key, env_state, action)
    candidates = obs.alive if obs.acting is None else obs.acting
    transition = Transition(
      obs.obs,
      obs.global_state,
      action,
      log_prob,
      value,
      reward,
      obs.alive,
      done,
      acting,
      candidates,
    )
    return (env_state, next_obs), transition

  step_keys = jax.random.split(scan_key, env.num_steps)
  if env.step_at is None:
    (env_state, obs), transitions = jax.lax.scan(step_fn, (env_state, obs), step_keys)
  else:  # Unrolled: step t runs only its own work (no switch over the steps of every env).
    carry, steps = (env_state, obs), []
    for t in range(env.num_steps):
      carry, transition = step_fn(carry, step_keys[t], step=env.step_at(t))
      steps.append(transition)
    (env_state, obs) = carry
    transitions = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *steps)
  last_value = critic.apply(learner_state.critic_params, obs.global_state, obs.obs) * obs.alive
  info = RolloutInfo(last_value=last_value, env_state=env_state, top_k=obs.choose is not None)
  return transitions, info


def compute_gae(
  reward: Array,
  value: Array,
  done: Array,
  alive: Array,
  gamma: float,
  lam: float,
  last_value: Array | None = None,
) -> tuple[Array, Array]:
  """Generalised advantage estimation over (T, E, A) arrays, by a reverse scan.

  The bootstrap from step t to t+1 is cut when the agent is done at t or dead at t+1 (a dead agent
  is done), and dead steps get advantage 0, so nothing an env writes into dead slots reaches an
  earlier step:
    c_t = (1 - done_t) * alive_{t+1}          (alive_T = 1; last_value is already 0 where dead)
    delta_t = reward_t + gamma * c_t * V_{t+1} - V_t
    A_t = alive_t * (delta_t + gamma * lam * c_t * A_{t+1}),   returns_t = A_t + V_t.

  Args:
    reward: (T, E, A) rewards.
    value: (T, E, A) critic values at rollout time.
    done: (T, E, A) 1 at the step after which the trajectory ends.
    alive: (T, E, A) 1 while the agent is in the episode.
    gamma: discount.
    lam: GAE lambda.
    last_value: V_T (the value after the last step); None = 0 (the episode ends at T).

  Returns:
    (advantages, returns), both (T, E, A).
  """
  if last_value is None:
    last_value = jnp.zeros_like(value[0])
  next_value = jnp.concatenate([value[1:], last_value[None]], axis=0)
  next_alive = jnp.concatenate([alive[1:], jnp.ones_like(alive[:1])], axis=0)
  cont = (1.0 - done) * next_alive

  def step_fn(next_advantage, xs):
    reward_t, value_t, next_value_t, cont_t, alive_t = xs
    delta = reward_t + gamma * cont_t * next_value_t - value_t
    advantage = alive_t * (delta + gamma * lam * cont_t * next_advantage)
    return advantage, advantage

  _, advantages = jax.lax.scan(
    step_fn, jnp.zeros_like(last_value), (reward, value, next_value, cont, alive), reverse=True
  )
  return advantages, advantages + value


def lagrange_step(multiplier: float, cost: float, target: float, lr: float) -> float:
  """One projected dual-ascent step of a Lagrange multiplier on E[cost] <= target (RCPO).

  The constrained problem max E[R] s.t. E[C] <= target has Lagrangian E[R] - lambda (E[C] -
  target); the policy maximises it for the current lambda (the multiplier is in its reward), and
  lambda moves on a slower time scale by gradient descent on the Lagrangian's dual:
  lambda <- max(0, lambda + lr (cost - target)), so it grows while the cost is over target and
  shrinks (down to 0) while under (Tessler et al., ICLR 2019, eq. 6).
  """
  return max(0.0, float(multiplier) + float(lr) * (float(cost) - float(target)))


def leave_one_out_advantages(
  reward: Array, done: Array, alive: Array, gamma: float, k: int
) -> Array:
  """Advantages (T, E, A) of K plays per input (env i*K + j is play j of input i): the
  discounted return-to-go minus the mean return-to-go of the same (step, agent slot) in the input's
  other K - 1 plays, 0 where dead. The other plays do not depend on this play's actions, so the
  baseline adds no bias."""
  returns, _ = compute_gae(reward, jnp.zeros_like(reward), done, alive, gamma, 1.0)
  t, e, a = returns.shape
  plays = returns.reshape(t, e // k, k, a)
  others = (jnp.sum(plays, axis=2, keepdims=True) - plays) / (k - 1)
  return alive * (plays - others).reshape(t, e, a)


def ppo_loss(
  actor_params: Any,
  critic_params: Any,
  batch: Batch,
  actor: nn.Module,
  critic: nn.Module,
  *,
  clip_eps: float,
  value_clip_eps: float,
  value_coef: float,
  entropy_coef: float,
  counts: Optional[tuple[Array, Array]] = None,
) -> tuple[Array, dict[str, Array]]:
  """Clipped surrogate + value_coef * clipped value loss - entropy_coef * entropy.

    ratio = exp(log_pi(a) - log_prob_old)
    policy_loss = -mean(min(ratio * adv, clip(ratio, 1 - eps, 1 + eps) * adv))
    value_clipped = V_old + clip(V - V_old, -veps, veps)
    value_loss = 0.5 * mean(max((V - target)^2, (value_clipped - target)^2))

  The policy loss and the entropy are means over the deciding samples (`acting`), the value loss
  over the alive ones. With `batch.candidates` (top-k mode) log pi is the agent's Plackett-Luce
  term, which needs every agent of a unit: the batch then leads with (units, A).

  Args:
    actor_params: the actor's variables (differentiated).
    critic_params: the critic's variables (differentiated).
    batch: the samples, any leading shape.
    actor: the actor network.
    critic: the critic network.
    clip_eps: eps, the ratio clip.
    value_clip_eps: veps, the value clip around the rollout's values; 0 = a plain squared error
      (the clip is absolute, so it suits returns of order 1 only).
    value_coef: weight of the value loss.
    entropy_coef: weight of the entropy bonus.
    counts: (acting count, alive count) over the minibatch of every device, for a data-parallel
      update: each mean is then this device's share, and the shares sum to the global loss.
      None: the means are over `batch` alone.

  Returns:
    (total loss, {'policy_loss', 'value_loss', 'entropy', 'approx_kl', 'clip_fraction'}).
  """
  acting_count, alive_count = (None, None) if counts is None else counts
  log_prob, entropy = _log_prob_and_entropy(
    actor.apply(actor_params, batch.obs), batch.action, batch.candidates
  )
  log_ratio = log_prob - batch.log_prob
  ratio = jnp.exp(log_ratio)
  clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  surrogate = jnp.minimum(ratio * batch.advantage, clipped_ratio * batch.advantage)
  policy_loss = -_masked_mean(surrogate, batch.acting, acting_count)

  value = critic.apply(critic_params, batch.global_state, batch.obs)
  value_error = jnp.square(value - batch.target)
  if value_clip_eps > 0:
    value_clipped = batch.value + jnp.clip(value - batch.value, -value_clip_eps, value_clip_eps)
    value_error = jnp.maximum(value_error, jnp.square(value_clipped - batch.target))
  value_loss = 0.5 * _masked_mean(value_error, batch.alive, alive_count)

  entropy = _masked_mean(entropy, batch.acting, acting_count)
  total = policy_loss + value_coef * value_loss - entropy_coef * entropy
  clipped = (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)
  aux = {
    'policy_loss': policy_loss,
    'value_loss': value_loss,
    'entropy': entropy,
    # k3 estimator of KL(old || new): unbiased and never negative.
    'approx_kl': _masked_mean((ratio - 1.0) - log_ratio, batch.acting, acting_count),
    'clip_fraction': _masked_mean(clipped, batch.acting, acting_count),
  }
  return total, aux


def shuffle_group(num_steps: int, num_minibatches: int) -> int:
  """Envs shuffled together: the fewest g whose g * T units split evenly into the minibatches."""
  return num_minibatches // math.gcd(num_steps, num_minibatches)


def _shuffled_minibatches(
  key: Array,
  transitions: Transition,
  advantages: Array,
  targets: Array,
  num_minibatches: int,
  env_ids: Array,
  top_k: bool,
) -> Batch:
  """The rollout's (step, env) units, shuffled within groups of envs and cut into minibatches.

  A unit is all A agents of one env at one step (a top-k draw needs them together). The envs form
  groups of g consecutive ones (g = `shuffle_group(T, num_minibatches)`, so the g * T units of a
  group split evenly, with no padding); each group's units take a random order of their own, from
  `fold_in(key, group index)`, and minibatch m holds the m-th slice of every group. A group never
  straddles devices (the per-device env count must be a multiple of g), so 1 device and N devices
  cut the same global minibatches.

  Returns:
    A Batch with leading axes (num_minibatches, units per minibatch, A); global_state without A.
    ValueError if the env count is not a multiple of g.
  """
  t, e, _ = transitions.action.shape
  g = shuffle_group(t, num_minibatches)
  if e % g:
    raise ValueError(
      f'{e} envs per device cannot be cut into {num_minibatches} minibatches of the {t} steps: '
      f'use a multiple of {g} envs per device, or a number of minibatches that divides {t}'
    )
  units = g * t
  groups = env_ids[::g] // g
  perms = jax.vmap(lambda i: jax.random.permutation(jax.random.fold_in(key, i), units))(groups)

  def cut(x: Array) -> Array:  # (T, E, ...) -> (M, E * T / M, ...), shuffled per group.
    x = jnp.moveaxis(x, 1, 0).reshape((e // g, units) + x.shape[2:])
    x = jnp.take_along_axis(x, perms.reshape(perms.shape + (1,) * (x.ndim - 2)), axis=1)
    x = x.reshape((e // g, num_minibatches, units // num_minibatches) + x.shape[2:])
    return jnp.moveaxis(x, 1, 0).reshape((num_minibatches, -1) + x.shape[3:])

  return Batch(
    obs=cut(transitions.obs),
    global_state=cut(transitions.global_state),
    action=cut(transitions.action),
    log_prob=cut(transitions.log_prob),
    value=cut(transitions.value),
    advantage=cut(advantages),
    target=cut(targets),
    alive=cut(transitions.alive),
    acting=cut(transitions.acting),
    candidates=cut(transitions.candidates) if top_k else None,
  )


def make_update(
  ppo: PPOConfig,
  env: EnvFns,
  actor: nn.Module,
  critic: nn.Module,
  axis_name: Optional[str] = None,
) -> Callable[[LearnerState, Any, Array], tuple[LearnerState, dict[str, Array]]]:
  """update(learner_state, inputs, key) -> (learner_state, metrics): pure, for the caller to jit.

  With `axis_name` the function is one device's part of a data-parallel update (run it under
  shard_map, or use `make_sharded_update`): `inputs` are this device's envs, every mean is global
  (psum of sums and counts), and the gradients are summed over devices before each Adam step, so
  every device ends with the same state as one device running the whole batch.

  Metrics (scalars): 'episode_return' (summed over steps and agents, mean over envs),
  'alive_fraction' and 'acting_fraction' (means over (T, E, A)), the means over all epochs and
  minibatches of 'total_loss', 'policy_loss', 'value_loss', 'entropy', 'approx_kl', 'clip_fraction',
  and the env's own metrics of its final state.
  """
  actor_tx, critic_tx = create_optimizers(ppo)
  loss_fn = lambda a, c, b, counts: ppo_loss(
    a,
    c,
    b,
    actor,
    critic,
    clip_eps=ppo.clip_eps,
    value_clip_eps=ppo.value_clip_eps,
    value_coef=ppo.value_coef,
    entropy_coef=ppo.entropy_coef,
    counts=counts,
  )
  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
  pmean = lambda x: x if axis_name is None else jax.lax.pmean(x, axis_name)

  def minibatch_step(state: LearnerState, minibatch: Batch):
    counts = _psum((jnp.sum(minibatch.acting), jnp.sum(minibatch.alive)), axis_name)
    (total, aux), grads = grad_fn(state.actor_params, state.critic_params, minibatch, counts)
    # Each device's loss is its share of the global means: the sums are the global loss and its
    # gradient.
    (total, aux), (actor_grads, critic_grads) = _psum(((total, aux), grads), axis_name)
    actor_updates, actor_opt_state = actor_tx.update(
      actor_grads, state.actor_opt_state, state.actor_params
    )
    critic_updates, critic_opt_state = critic_tx.update(
      critic_grads, state.critic_opt_state, state.critic_params
    )
    state = state._replace(
      actor_params=optax.apply_updates(state.actor_params, actor_updates),
      critic_params=optax.apply_updates(state.critic_params, critic_updates),
      actor_opt_state=actor_opt_state,
      critic_opt_state=critic_opt_state,
    )
    return state, dict(aux, total_loss=total)

  def update(
    learner_state: LearnerState, inputs: Any, key: Array
  ) -> tuple[LearnerState, dict[str, Array]]:
    rollout_key, epochs_key = jax.random.split(key)
    k = ppo.rollouts_per_input
    if k > 1:  # Env i*K + j is play j of input i.
      inputs = jax.tree_util.tree_map(lambda x: jnp.repeat(x, k, axis=0), inputs)
    num_envs = jax.tree_util.tree_leaves(inputs)[0].shape[0]
    first = 0 if axis_name is None else jax.lax.axis_index(axis_name) * num_envs
    env_ids = first + jnp.arange(num_envs)
    transitions, info = rollout(
      rollout_key, learner_state, env, actor, critic, inputs, env_ids=env_ids
    )
    advantages, targets = compute_gae(
      transitions.reward,
      transitions.value,
      transitions.done,
      transitions.alive,
      ppo.gamma,
      ppo.gae_lambda,
      info.last_value,
    )
    alive, acting = transitions.alive, transitions.acting
    if k > 1:
      advantages = leave_one_out_advantages(
        transitions.reward, transitions.done, alive, ppo.gamma, k
      )
    if ppo.normalize_advantages:  # Over the samples the policy loss sees, on every device.
      mean = _global_mean(advantages, acting, axis_name)
      std = jnp.sqrt(_global_mean(jnp.square(advantages - mean), acting, axis_name))
      advantages = acting * (advantages - mean) / (std + 1e-8)

    def epoch_step(state: LearnerState, epoch_key: Array):
      minibatches = _shuffled_minibatches(
        epoch_key, transitions, advantages, targets, ppo.num_minibatches, env_ids, info.top_k
      )
      return jax.lax.scan(minibatch_step, state, minibatches)

    learner_state, losses = jax.lax.scan(
      epoch_step, learner_state, jax.random.split(epochs_key, ppo.update_epochs)
    )
    learner_state = learner_state._replace(step=learner_state.step + 1)
    metrics = jax.tree_util.tree_map(jnp.mean, losses)
    local = {
      'episode_return': jnp.mean(jnp.sum(transitions.reward * alive, axis=(0, 2))),
      'alive_fraction': jnp.mean(alive),
      'acting_fraction': jnp.mean(acting),
    }
    if env.metrics is not None:
      local.update(env.metrics(info.env_state))
    # Means over equal shards of envs: the mean of the devices' means.
    metrics.update(jax.tree_util.tree_map(pmean, local))
    return learner_state, metrics

  return update


def make_sharded_update(
  ppo: PPOConfig,
  env: EnvFns,
  actor: nn.Module,
  critic: nn.Module,
  mesh: jax.sharding.Mesh,
  axis_name: str = 'data',
) -> Callable[[LearnerState, Any, Array], tuple[LearnerState, dict[str, Array]]]:
  """The data-parallel update over `mesh`: rollout, GAE, shuffles and minibatch steps all run on
  each device's own envs (`inputs` split along E), and only sums and gradients cross devices.

  The learner state and the key are replicated. One device and N devices give the same state
  (up to float summation order) for envs whose randomness is per env (the pruning games are
  deterministic given the actions, and actions are drawn per env).
  """
  local = make_update(ppo, env, actor, critic, axis_name)
  spec = jax.sharding.PartitionSpec
  # check_vma=False: each device differentiates its own share of the loss and `make_update` sums
  # the gradients itself (with tracking on, jax would already sum the cotangents of the replicated
  # params, and the explicit psum would count them once per device).
  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(spec(), spec(axis_name), spec()),
    out_specs=(spec(), spec()),
    check_vma=False,
  )
