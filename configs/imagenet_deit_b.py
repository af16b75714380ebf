"""DeiT-B on ImageNet-1k (224x224, patch 16: 196 patches + CLS), DeiT's recipe scaled to batch 1024.

Needs ImageNet through TFDS: the ILSVRC2012 tarballs in --config.dataset.manual_dir (see README). Meant for TPU
pods or multi-GPU hosts; the batch is global and split over every device.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import default  # pylint: disable=g-import-not-at-top


def get_config():
  config = default.get_config()
  config.dataset.name = 'imagenet2012'
  config.dataset.image_size = 224
  config.dataset.augment = 'inception_crop'
  config.dataset.normalization = 'imagenet'
  config.dataset.shuffle_buffer = 50_000
  config.model.variant = 'deit_base'
  config.model.dropout_rate = 0.0
  config.model.dtype = 'bfloat16'
  config.train.batch_size = 1024
  config.train.num_epochs = 300
  config.train.learning_rate = 1e-3  # DeiT: 5e-4 * batch / 512.
  config.train.warmup_epochs = 5.0
  config.train.weight_decay = 0.05
  config.train.label_smoothing = 0.1
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2000
  config.eval.batch_size = 1024
  return config
