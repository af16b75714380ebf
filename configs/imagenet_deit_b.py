"""DeiT-B/16 on ImageNet-1k: `imagenet_deit_s.py`'s recipe with the base geometry (768 wide, 12 heads).

Needs ImageNet through TFDS (ILSVRC2012 tarballs in --config.dataset.manual_dir); see README.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import imagenet_deit_s  # pylint: disable=g-import-not-at-top


def get_config():
  config = imagenet_deit_s.get_config()
  config.model.variant = 'deit_base'
  config.model.dropout_rate = 0.0
  return config
