"""RL4EViT's second phase on the benchmark model: fine-tune the ViT with the learned MAPPO policy in the loop.

  python -m vitprune_jax.main --config configs/fashion_mnist_finetune.py --workdir runs/fashion_finetune
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'finetune'
  config.eval.checkpoint_dir = 'runs/fashion'
  config.rl.policy_dir = 'runs/fashion_mappo'
  config.prune.prune_from_epoch = 0
  config.train.num_epochs = 2
  config.train.learning_rate = 2e-4
  config.train.warmup_epochs = 0.2
  return config
