"""RL4EViT on DeiT-S/16 and ImageNet-1k: per-token MAPPO agents before blocks 3, 6 and 9 (as its public code).

Needs a DeiT-S checkpoint from `configs/imagenet_deit_s.py` (or imported weights) in --config.eval.checkpoint_dir
and ImageNet through TFDS. The ViT stays frozen; `mode='finetune'` with --config.rl.policy_dir adapts it afterwards.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import imagenet_deit_s  # pylint: disable=g-import-not-at-top


def get_config():
  config = imagenet_deit_s.get_config()
  config.mode = 'train_policy'
  config.eval.checkpoint_dir = 'runs/imagenet_deit_s'
  config.eval.batch_size = 256
  config.rl.policy = 'mappo'
  config.rl.pruning_points = (2, 5, 8)  # After blocks 2, 5, 8 = before blocks 3, 6, 9 (0-based).
  config.rl.num_envs = 256
  config.rl.num_updates = 5000
  config.rl.actor_lr = 5e-5
  config.rl.critic_lr = 2e-4
  config.rl.log_every = 50
  config.rl.checkpoint_every = 500
  return config
