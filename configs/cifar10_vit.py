"""A small ViT with the CLS-attention paper's CIFAR-10 token geometry: 8 layers, 145 tokens (CLS +
12x12 patches of a 48x48 upscaled image), but 192 wide, 3 heads, MLP 384 (`cifar10_small`). The
paper's own model is `configs/cifar10_cls_paper.py`.

  python -m vitprune_jax.main --config configs/cifar10_vit.py --workdir runs/cifar10 \
      --config.data.data_dir=/data/tfds

Needs TFDS's cifar10 prepared in --config.data.data_dir (README, "Other datasets"); not measured
here (no download on the development machine).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = 'cifar10'
  config.data.image_size = 48
  config.data.augment = 'crop_flip'
  config.model.variant = 'cifar10_small'
  config.model.dropout_rate = 0.1
  config.train.batch_size = 128
  config.train.num_epochs = 10
  config.train.warmup_epochs = 1.0
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  config.eval.batch_size = 500
  return config
