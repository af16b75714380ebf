"""A learned pruning policy for the quickstart ViT (reuses runs/digits; override
--config.init.vit_dir).

  python -m vitprune_jax.main --config configs/digits_policy.py:mappo --workdir runs/digits_mappo
  python -m vitprune_jax.main --config configs/digits_policy.py:two_agent \
      --workdir runs/digits_two_agent

Variants: `mappo` (RL4EViT: a token agent at every pruning point), `budget` (the same agents keep
exactly a budget's share of the tokens at each point) and `two_agent` (an attention and a
similarity agent vote once, at a target ratio). Expected: train_policy_results.md, the policy
against random and cls_attention at its own per-layer capacities; a few minutes on 2 CPU cores.
"""

from configs import digits_vit


def get_config(variant: str = 'mappo'):
  config = digits_vit.get_config()
  config.mode = 'train_policy'
  config.init.vit_dir = 'runs/digits'
  config.game.policy = 'two_agent' if variant == 'two_agent' else 'mappo'
  if variant == 'budget':
    config.game.action_mode = 'budget'
  elif variant == 'mappo':
    config.game.efficiency_weight = 0.1
  config.ppo.num_updates = 150
  return config
