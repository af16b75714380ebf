"""Every pruner on the Fashion-MNIST benchmark model, in one command (reuses runs/fashion).

  python -m vitprune_jax.main --config configs/fashion_mnist_prune_eval.py \
      --workdir runs/fashion_prune

The schedule (r_max 0.6, alpha 2) is the default one; `configs/fashion_mnist_prune_sweep.py` sweeps
it on validation; tome and evit take their default options (prune.tome_r, prune.evit_*). Also the
share of background among each pruner's kept patches, on 256 test images. Expected: the README's
heuristics table (evaluate_results.md), a few minutes.
"""

from configs import fashion_mnist_vit


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'evaluate'
  config.init.vit_dir = 'runs/fashion'
  config.prune.pruners = (
    'none',
    'random',
    'greedy',
    'cls_attention',
    'inverse_cls_attention',
    'cls_value_attention',
    'mean_attention',
    'similarity',
    'tome',
    'evit',
  )
  config.viz.background_images = 256  # Why cls_attention loses: what it keeps (issue 11).
  return config
