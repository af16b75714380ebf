"""The CLS-attention paper's section 5 on the benchmark model: sweep alpha x r_max of cls_attention
on validation, plot the Pareto front, then report the selected schedule on test (reuses
runs/fashion).

  python -m vitprune_jax.main --config configs/fashion_mnist_prune_sweep.py \
      --workdir runs/fashion_sweep

Expected: no schedule within 0.4 pt of unpruned at 45 % fewer GFLOPs (README, "Results").
"""

from configs import fashion_mnist_vit


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'sweep'
  config.init.vit_dir = 'runs/fashion'
  config.sweep.alphas = (0.5, 1.0, 1.2, 1.5, 2.0, 3.0)
  config.sweep.r_maxes = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
  return config
