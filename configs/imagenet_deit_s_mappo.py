"""RL4EViT on DeiT-S/16 and ImageNet-1k: per-token MAPPO agents before blocks 3, 6 and 9 (as its
code).

  python -m vitprune_jax.main --config configs/imagenet_deit_s_mappo.py \
      --workdir runs/deit_s_mappo \
      --config.init.vit_dir=runs/imagenet_deit_s --config.data.manual_dir=/data/imagenet

Needs a DeiT-S checkpoint (`configs/imagenet_deit_s.py` or imported weights) and ImageNet through
TFDS. The ViT stays frozen; `mode=finetune` with --config.init.policy_dirs adapts it afterwards. Not
measured.
"""

from configs import imagenet_deit_s


def get_config():
  config = imagenet_deit_s.get_config()
  config.mode = 'train_policy'
  config.init.vit_dir = 'runs/imagenet_deit_s'
  config.eval.batch_size = 256
  config.game.pruning_points = (2, 5, 8)  # After blocks 2, 5, 8 = before blocks 3, 6, 9 (0-based).
  config.ppo.num_envs = 256
  config.ppo.num_updates = 5000
  config.ppo.actor_lr = 5e-5
  config.ppo.critic_lr = 2e-4
  config.ppo.log_every_steps = 50
  config.ppo.checkpoint_every_steps = 500
  return config
