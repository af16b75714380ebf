"""Learned token pruning: a task-agnostic MAPPO learner, its networks, the pruning games, policies.

- `learner`: PPOConfig, EnvFns, rollout, GAE, the PPO loss and `make_update` (pure functions).
- `networks`: the shared actor and the centralised critic.
- `pruning_env` (RL4EViT's per-token game), `two_agent_env` (seed 000's two-agent vote),
  `toy_env` (a game with a known optimum, for tests).
- `policies`: PolicySpec, the POLICIES registry, `load_policy`, and the policy as a deployed Pruner.
"""

from vitprune_jax.rl.learner import (
  Batch,
  EnvFns,
  EnvObs,
  LearnerState,
  PPOConfig,
  RolloutInfo,
  Transition,
  compute_gae,
  create_optimizers,
  init_learner,
  make_update,
  ppo_loss,
  rollout,
)
from vitprune_jax.rl.networks import Actor, Critic

__all__ = [
  'Actor',
  'Batch',
  'Critic',
  'EnvFns',
  'EnvObs',
  'LearnerState',
  'PPOConfig',
  'RolloutInfo',
  'Transition',
  'compute_gae',
  'create_optimizers',
  'init_learner',
  'make_update',
  'ppo_loss',
  'rollout',
]
