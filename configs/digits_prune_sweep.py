"""The schedule sweep on the quickstart model (reuses runs/digits): a fast look at mode=sweep.

  python -m vitprune_jax.main --config configs/digits_prune_sweep.py --workdir runs/digits_sweep

Expected: sweep_results.md (12 schedules on validation) and sweep_pareto.png, in under a minute.
"""

from configs import digits_vit


def get_config():
  config = digits_vit.get_config()
  config.mode = 'sweep'
  config.init.vit_dir = 'runs/digits'
  config.sweep.alphas = (0.5, 1.0, 2.0)
  config.sweep.r_maxes = (0.3, 0.5, 0.7, 0.9)
  return config
