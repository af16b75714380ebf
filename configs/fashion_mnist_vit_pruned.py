"""Seed 002's pruned training on the benchmark model: unpruned for the first epochs, then cls_attention pruning in
compact mode (real token removal), so the later epochs are cheaper.

  python -m vitprune_jax.main --config configs/fashion_mnist_vit_pruned.py --workdir runs/fashion_pruned
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = fashion_mnist_vit.get_config()
  config.prune.train_pruner = 'cls_attention'
  config.prune.prune_from_epoch = 4
  config.prune.r_max = 0.6
  config.prune.alpha = 2.0
  return config
