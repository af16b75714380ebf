"""Every pruner on the Fashion-MNIST benchmark model, in one command (reuses runs/fashion).

  python -m vitprune_jax.main --config configs/fashion_mnist_prune_eval.py --workdir runs/fashion_prune

The schedule (r_max, alpha) is the one `configs/fashion_mnist_prune_sweep.py` selected on the validation split.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'evaluate'
  config.eval.checkpoint_dir = 'runs/fashion'
  config.prune.pruners = ('none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity')
  config.prune.r_max = 0.6
  config.prune.alpha = 2.0
  return config
