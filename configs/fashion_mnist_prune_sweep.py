"""Seed 002 §5 on the benchmark model: sweep alpha x r_max of cls_attention on validation, plot the Pareto front,
then report the selected schedule on test.

  python -m vitprune_jax.main --config configs/fashion_mnist_prune_sweep.py --workdir runs/fashion_sweep
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fashion_mnist_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'sweep'
  config.eval.checkpoint_dir = 'runs/fashion'
  config.prune.sweep_pruner = 'cls_attention'
  config.prune.sweep_alphas = (0.5, 1.0, 1.2, 1.5, 2.0, 3.0)
  config.prune.sweep_r_maxes = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
  config.prune.sweep_tolerance = 0.004
  return config
