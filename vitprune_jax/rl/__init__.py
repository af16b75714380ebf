"""Learned pruning policies: a task-agnostic MAPPO learner (`learner`), its networks and a toy env for tests."""
from vitprune_jax.rl.learner import (Batch, EnvFns, EnvObs, LearnerState, Transition, compute_gae,
                                     create_optimizers, init_learner, make_update, ppo_loss, rollout)
from vitprune_jax.rl.networks import Actor, Critic
