"""Compare every pruner on the quickstart model: reuses runs/digits (override --config.eval.checkpoint_dir).

  python -m vitprune_jax.main --config configs/digits_prune_eval.py --workdir runs/digits_prune
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import digits_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = digits_vit.get_config()
  config.mode = 'evaluate'
  config.eval.checkpoint_dir = 'runs/digits'
  config.prune.pruners = ('none', 'random', 'greedy', 'cls_attention', 'mean_attention', 'similarity')
  config.prune.r_max = 0.6
  config.prune.alpha = 1.0
  return config
