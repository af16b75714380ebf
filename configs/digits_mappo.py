"""mappo pruning policy for the quickstart ViT (reuses runs/digits; override --config.eval.checkpoint_dir).

  python -m vitprune_jax.main --config configs/digits_mappo.py --workdir runs/digits_mappo
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import digits_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = digits_vit.get_config()
  config.mode = 'train_policy'
  config.eval.checkpoint_dir = 'runs/digits'
  config.rl.policy = 'mappo'
  config.rl.beta = 0.1
  config.rl.num_envs = 64
  config.rl.num_updates = 150
  config.rl.log_every = 10
  config.rl.checkpoint_every = 50
  return config
