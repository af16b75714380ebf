"""A learned pruning policy for the Fashion-MNIST benchmark ViT (reuses runs/fashion).

  python -m vitprune_jax.main --config configs/fashion_mnist_policy.py:mappo \
      --workdir runs/fashion_mappo
  python -m vitprune_jax.main --config configs/fashion_mnist_policy.py:two_agent \
      --workdir runs/fashion_two_agent

Expected (test): mappo 0.59x GFLOPs at -1.0 pt on validation, about 150 s; two_agent 86.75 % at
0.58x against random 84.22 % (README, "Results").
"""

from configs import fashion_mnist_vit


def get_config(variant: str = 'mappo'):
  config = fashion_mnist_vit.get_config()
  config.mode = 'train_policy'
  config.init.vit_dir = 'runs/fashion'
  config.game.policy = variant
  if variant == 'mappo':
    # Chosen on validation from {0.1, 0.03, 0.01}: 0.59x GFLOPs at -1.0 pt there.
    config.game.efficiency_weight = 0.01
  config.ppo.num_updates = 300
  return config
