"""DeiT-B/16 on ImageNet-1k: `imagenet_deit_s.py`'s recipe with the base geometry (768 wide, 12
heads).

  python -m vitprune_jax.main --config configs/imagenet_deit_b.py --workdir runs/imagenet_deit_b \
      --config.data.manual_dir=/data/imagenet

Needs ImageNet through TFDS (ILSVRC2012 tarballs in --config.data.manual_dir). Not measured here.
"""

from configs import imagenet_deit_s


def get_config():
  config = imagenet_deit_s.get_config()
  config.model.variant = 'deit_base'
  return config
