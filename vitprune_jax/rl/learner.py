"""Multi-agent PPO (MAPPO) with parameter sharing, as small pure functions.

The learner knows nothing about tokens: an environment is a pair of pure functions (`EnvFns`) over
a batch of E envs with A agent slots each, and agents appear and die through the `alive` mask. One
update is rollout (lax.scan over T) -> GAE (reverse lax.scan) -> advantage normalisation ->
update_epochs x num_minibatches Adam steps (lax.scan inside lax.scan) over the flattened T*E*A
samples. Every mean is weighted by `alive`, so dead agent slots keep shapes static and contribute
nothing. The hyper-parameters are one explicit `PPOConfig`.

Data parallelism: the caller jits `make_update`'s function, replicates the LearnerState and splits
`inputs` along E (`parallel.batch_sharding`). The rollout (where the env's cost is) then runs split
along E; the losses are means over the global batch, so 1 device and N devices compute the same
update. The PPO epochs shuffle samples across the whole batch, which XLA implements by all-gathering
the T*E*A samples, so every device runs the (small MLP) minibatch steps on the same data rather than
on a slice of it.
"""

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
  value_clip_eps: float = 0.2  # Value-function clip around the rollout's values.
  entropy_coef: float = 0.01
  value_coef: float = 0.5
  max_grad_norm: float = 1.0  # Global-norm gradient clip, per network.
  update_epochs: int = 4  # PPO epochs per update.
  num_minibatches: int = 4  # Per epoch, over all (step, env, agent) samples.
  normalize_advantages: bool = True


class EnvObs(NamedTuple):
  obs: Array  # (E, A, F) per-agent observation.
  global_state: Array  # (E, G) centralised state for the critic.
  alive: Array  # (E, A) float 1/0: the agent is in the episode (its rewards and value count).
  # (E, A) float 1/0: the agent decides at this step; None = every alive agent. An agent can stay in
  # the episode without deciding (a pruned token still shares the image's final accuracy reward).
  acting: Optional[Array] = None


class EnvFns(NamedTuple):
  """A batched env. `step` must ignore the actions of dead agents and give them reward 0."""

  # (key, inputs) -> (env_state, obs); inputs lead with E.
  reset: Callable[[Array, Any], tuple[Any, EnvObs]]
  # (key, env_state, actions (E, A) int32) -> (env_state, next_obs, reward (E, A), done (E, A));
  # done = 1 at the step after which the agent's trajectory ends.
  step: Callable[[Array, Any, Array], tuple[Any, EnvObs, Array, Array]]
  num_steps: int  # Fixed episode length T (static).
  # Final env state -> scalar metrics to log.
  metrics: Optional[Callable[[Any], dict[str, Array]]] = None


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
  acting: Array  # (T, E, A): alive and deciding; weights the policy loss.


class RolloutInfo(NamedTuple):
  """What a rollout leaves besides its transitions."""

  last_value: Array  # (E, A) critic value of the final obs, 0 where dead (the GAE bootstrap).
  env_state: Any  # The final env state (for the env's metrics).


class Batch(NamedTuple):
  """What the PPO loss needs per sample; any leading shape (flat (N,) in the update)."""

  obs: Array  # (..., F)
  global_state: Array  # (..., G), or without the agent axis (see networks.Critic).
  action: Array
  log_prob: Array
  value: Array
  advantage: Array
  target: Array  # Value target (GAE return).
  alive: Array  # Weight of the value loss: 1 alive, 0 dead.
  acting: Array  # Weight of the policy loss and entropy: 1 if the agent decided.


class LearnerState(NamedTuple):
  actor_params: Any
  critic_params: Any
  actor_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  step: Array  # int32 scalar: updates done.


def _masked_mean(x: Array, mask: Array) -> Array:
  """Mean over the mask-1 entries; an all-dead batch gives 0, not NaN."""
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _policy(actor: nn.Module, actor_params: Any, obs: Array) -> distrax.Bernoulli:
  return distrax.Bernoulli(logits=actor.apply(actor_params, obs), dtype=jnp.int32)


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
) -> tuple[Transition, RolloutInfo]:
  """Plays one episode of length T in every env with the current policy.

  Args:
    key: PRNG key of the episode (env reset, actions, env steps).
    learner_state: the policy (actor params) and the critic that values each step.
    env: the batched env.
    actor: the actor network.
    critic: the critic network.
    inputs: the env's inputs (E leading), e.g. a batch of images.

  Returns:
    The stacked transitions (T leading) and a `RolloutInfo`.
  """
  reset_key, scan_key = jax.random.split(key)
  env_state, obs = env.reset(reset_key, inputs)

  def step_fn(carry, step_key):
    env_state, obs = carry
    act_key, env_key = jax.random.split(step_key)
    pi = _policy(actor, learner_state.actor_params, obs.obs)
    action, log_prob = pi.sample_and_log_prob(seed=act_key)
    value = critic.apply(learner_state.critic_params, obs.global_state, obs.obs)
    env_state, next_obs, reward, done = env.step(env_key, env_state, action)
    acting = obs.alive if obs.acting is None else obs.acting
    transition = Transition(
      obs.obs, obs.global_state, action, log_prob, value, reward, obs.alive, done, acting
    )
    return (env_state, next_obs), transition

  (env_state, obs), transitions = jax.lax.scan(
    step_fn, (env_state, obs), jax.random.split(scan_key, env.num_steps)
  )
  last_value = critic.apply(learner_state.critic_params, obs.global_state, obs.obs) * obs.alive
  return transitions, RolloutInfo(last_value=last_value, env_state=env_state)


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
) -> tuple[Array, dict[str, Array]]:
  """Clipped surrogate + value_coef * clipped value loss - entropy_coef * entropy.

    ratio = exp(log_pi(a) - log_prob_old)
    policy_loss = -mean(min(ratio * adv, clip(ratio, 1 - eps, 1 + eps) * adv))
    value_clipped = V_old + clip(V - V_old, -veps, veps)
    value_loss = 0.5 * mean(max((V - target)^2, (value_clipped - target)^2))

  The policy loss and the entropy are means over the deciding samples (`acting`), the value loss
  over the alive ones.

  Args:
    actor_params: the actor's variables (differentiated).
    critic_params: the critic's variables (differentiated).
    batch: the samples, any leading shape.
    actor: the actor network.
    critic: the critic network.
    clip_eps: eps, the ratio clip.
    value_clip_eps: veps, the value clip around the rollout's values.
    value_coef: weight of the value loss.
    entropy_coef: weight of the entropy bonus.

  Returns:
    (total loss, {'policy_loss', 'value_loss', 'entropy', 'approx_kl', 'clip_fraction'}).
  """
  pi = _policy(actor, actor_params, batch.obs)
  log_prob = pi.log_prob(batch.action)
  log_ratio = log_prob - batch.log_prob
  ratio = jnp.exp(log_ratio)
  clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  surrogate = jnp.minimum(ratio * batch.advantage, clipped_ratio * batch.advantage)
  policy_loss = -_masked_mean(surrogate, batch.acting)

  value = critic.apply(critic_params, batch.global_state, batch.obs)
  value_clipped = batch.value + jnp.clip(value - batch.value, -value_clip_eps, value_clip_eps)
  value_error = jnp.maximum(
    jnp.square(value - batch.target), jnp.square(value_clipped - batch.target)
  )
  value_loss = 0.5 * _masked_mean(value_error, batch.alive)

  entropy = _masked_mean(pi.entropy(), batch.acting)
  total = policy_loss + value_coef * value_loss - entropy_coef * entropy
  clipped = (jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)
  aux = {
    'policy_loss': policy_loss,
    'value_loss': value_loss,
    'entropy': entropy,
    # k3 estimator of KL(old || new): unbiased and never negative.
    'approx_kl': _masked_mean((ratio - 1.0) - log_ratio, batch.acting),
    'clip_fraction': _masked_mean(clipped, batch.acting),
  }
  return total, aux


def _shuffled_minibatches(
  key: Array, transitions: Transition, advantages: Array, targets: Array, num_minibatches: int
) -> Batch:
  """A random permutation of the T*E*A samples, cut into (num_minibatches, N / num_minibatches).

  The per-env global state is gathered per sample by its (step, env) row instead of being copied to
  all A agents first, so the shuffle moves G floats per sample, not an (T, E, A, G) broadcast.
  """
  t, e, a = transitions.action.shape
  num_samples = t * e * a
  if num_samples % num_minibatches:
    raise ValueError(
      f'T*E*A = {num_samples} samples do not split into num_minibatches = '
      f'{num_minibatches} equal minibatches.'
    )
  perm = jax.random.permutation(key, num_samples)
  take = lambda x: jnp.take(x.reshape((num_samples,) + x.shape[3:]), perm, axis=0)
  # Flat sample index = (t * E + e) * A + a, so its (step, env) row is index // A.
  global_state = jnp.take(transitions.global_state.reshape(t * e, -1), perm // a, axis=0)
  batch = Batch(
    take(transitions.obs),
    global_state,
    take(transitions.action),
    take(transitions.log_prob),
    take(transitions.value),
    take(advantages),
    take(targets),
    take(transitions.alive),
    take(transitions.acting),
  )
  return jax.tree_util.tree_map(lambda x: x.reshape((num_minibatches, -1) + x.shape[1:]), batch)


def make_update(
  ppo: PPOConfig, env: EnvFns, actor: nn.Module, critic: nn.Module
) -> Callable[[LearnerState, Any, Array], tuple[LearnerState, dict[str, Array]]]:
  """update(learner_state, inputs, key) -> (learner_state, metrics): pure, for the caller to jit.

  Metrics (scalars): 'episode_return' (summed over steps and agents, mean over envs),
  'alive_fraction' and 'acting_fraction' (means over (T, E, A)), the means over all epochs and
  minibatches of 'total_loss', 'policy_loss', 'value_loss', 'entropy', 'approx_kl', 'clip_fraction',
  and the env's own metrics of its final state.
  """
  actor_tx, critic_tx = create_optimizers(ppo)
  loss_fn = lambda a, c, b: ppo_loss(
    a,
    c,
    b,
    actor,
    critic,
    clip_eps=ppo.clip_eps,
    value_clip_eps=ppo.value_clip_eps,
    value_coef=ppo.value_coef,
    entropy_coef=ppo.entropy_coef,
  )
  grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)

  def minibatch_step(state: LearnerState, minibatch: Batch):
    (total, aux), grads = grad_fn(state.actor_params, state.critic_params, minibatch)
    actor_grads, critic_grads = grads
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
    transitions, info = rollout(rollout_key, learner_state, env, actor, critic, inputs)
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
    if ppo.normalize_advantages:  # Over the samples the policy loss sees.
      mean = _masked_mean(advantages, acting)
      std = jnp.sqrt(_masked_mean(jnp.square(advantages - mean), acting))
      advantages = acting * (advantages - mean) / (std + 1e-8)

    def epoch_step(state: LearnerState, epoch_key: Array):
      minibatches = _shuffled_minibatches(
        epoch_key, transitions, advantages, targets, ppo.num_minibatches
      )
      return jax.lax.scan(minibatch_step, state, minibatches)

    learner_state, losses = jax.lax.scan(
      epoch_step, learner_state, jax.random.split(epochs_key, ppo.update_epochs)
    )
    learner_state = learner_state._replace(step=learner_state.step + 1)
    metrics = jax.tree_util.tree_map(jnp.mean, losses)
    metrics['episode_return'] = jnp.mean(jnp.sum(transitions.reward * alive, axis=(0, 2)))
    metrics['alive_fraction'] = jnp.mean(alive)
    metrics['acting_fraction'] = jnp.mean(acting)
    if env.metrics is not None:
      metrics.update(env.metrics(info.env_state))
    return learner_state, metrics

  return update
