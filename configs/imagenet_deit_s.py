"""DeiT-S on ImageNet-1k (224x224, patch 16: 196 patches + CLS), DeiT's optimizer at batch 1024.

  python -m vitprune_jax.main --config configs/imagenet_deit_s.py --workdir runs/imagenet_deit_s \
      --config.data.manual_dir=/data/imagenet

Needs ImageNet through TFDS: the ILSVRC2012 tarballs in --config.data.manual_dir (README). Meant for
TPU pods or multi-GPU hosts; the batch is global and split over every device. Not measured here.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.data.augment = 'inception_crop'
  config.data.normalization = 'imagenet'
  config.model.variant = 'deit_small'
  config.model.dtype = 'bfloat16'
  config.train.batch_size = 1024
  config.train.num_epochs = 300
  # train.learning_rate keeps the default 1e-3, which is DeiT's 5e-4 * batch / 512.
  config.train.warmup_epochs = 5.0
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2000
  config.eval.batch_size = 1024
  return config
