"""The schedule sweep on the quickstart model (reuses runs/digits); a fast way to see mode='sweep'."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import digits_vit  # pylint: disable=g-import-not-at-top


def get_config():
  config = digits_vit.get_config()
  config.mode = 'sweep'
  config.eval.checkpoint_dir = 'runs/digits'
  config.prune.sweep_alphas = (0.5, 1.0, 2.0)
  config.prune.sweep_r_maxes = (0.3, 0.5, 0.7, 0.9)
  return config
