"""Seed 002's CIFAR-10 model: 8 layers, 145 tokens (CLS + 12x12 patches of a 48x48 upscaled image).

Needs TFDS's cifar10 prepared in --config.dataset.data_dir (see README, "Other datasets").
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # pylint: disable=g-import-not-at-top


def get_config():
  config = default.get_config()
  config.dataset.name = 'cifar10'
  config.dataset.image_size = 48
  config.dataset.augment = 'crop_flip'
  config.model.variant = 'cifar10'
  config.model.dropout_rate = 0.1
  config.train.batch_size = 128
  config.train.num_epochs = 10
  config.train.learning_rate = 1e-3
  config.train.warmup_epochs = 1.0
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  config.eval.batch_size = 500
  return config
