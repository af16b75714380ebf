"""mappo pruning policy for the Fashion-MNIST benchmark ViT (reuses runs/fashion).

  python -m vitprune_jax.main --config configs/fashion_mnist_mappo.py --workdir runs/fashion_mappo
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'train_policy'
  config.eval.checkpoint_dir = 'runs/fashion'
  config.rl.policy = 'mappo'
  config.rl.beta = 0.01  # Chosen on validation from {0.1, 0.03, 0.01}: 0.59x GFLOPs at -1.0 pt there.
  config.rl.num_envs = 64
  config.rl.num_updates = 300
  config.rl.log_every = 10
  config.rl.checkpoint_every = 50
  return config
