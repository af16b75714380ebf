"""Every pruner on the quickstart model (reuses runs/digits; override --config.init.vit_dir).

  python -m vitprune_jax.main --config configs/digits_prune_eval.py --workdir runs/digits_prune

Expected: one table of accuracy, GFLOPs and images/s per pruner (evaluate_results.md), seconds.
"""

from configs import digits_vit


def get_config():
  config = digits_vit.get_config()
  config.mode = 'evaluate'
  config.init.vit_dir = 'runs/digits'
  config.prune.pruners = (
    'none',
    'random',
    'greedy',
    'cls_attention',
    'mean_attention',
    'similarity',
  )
  config.prune.alpha = 1.0
  return config
