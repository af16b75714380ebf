"""Quickstart: a 4-layer ViT on scikit-learn's digits (8x8, patch 2: 16 patches + CLS).

  python -m vitprune_jax.main --config configs/digits_vit.py --workdir runs/digits

Expected: about 97 % test accuracy (359 images) in about 70 s on 2 CPU cores.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.augment = 'none'  # Chosen on validation: 'crop' gave 0.939 vs 0.956 (60 epochs).
  config.train.num_epochs = 60
  config.train.learning_rate = 3e-3
  config.train.log_every_steps = 20
  return config
