"""DeiT-S on ImageNet-1k with DeiT's published training recipe (Touvron et al. 2021, Table 9;
facebookresearch/deit `main.py` defaults), for TPU pods and multi-GPU hosts.

  python -m vitprune_jax.main --config configs/imagenet_deit_s.py --workdir runs/imagenet_deit_s \
      --config.data.manual_dir=/data/imagenet

Needs ImageNet through TFDS: the ILSVRC2012 tarballs in --config.data.manual_dir (README). The batch
is global and split over every device. Not measured here (no ImageNet offline).

DeiT's recipe, key by key (inherited where the default already is DeiT's value):
- 224x224, patch 16 (196 patches + CLS), DeiT-S geometry; bf16 compute, fp32 params;
- 300 epochs, batch 1024, AdamW lr 5e-4 * 1024 / 512 = 1e-3 (train.learning_rate, the default),
  weight decay 0.05 (the default), 5 warm-up epochs from 1e-6, cosine decay to 1e-5, no gradient
  clipping;
- label smoothing 0.1 (the default), mixup 0.8, cutmix 1.0, switch prob 0.5 (the default), mix
  prob 1.0 (the default), random erasing 0.25, stochastic depth 0.1, no dropout (the default);
- random-resized crop 8-100 % and horizontal flip (inception_crop), RandAugment
  rand-m9-mstd0.5-inc1 (filling with the ImageNet mean), repeated augmentation x3, ImageNet
  normalisation.
What differs from DeiT, in detail: RandAugment's rotate, shear and translate sample bilinearly
(DeiT: bicubic; TensorFlow's image transform has no bicubic); the learning rate moves every step,
not every epoch, and the cosine starts after the warm-up (timm's counts from epoch 0); repeated
augmentation keeps an image's three copies in a row on one host, in one batch or two neighbouring
ones (DeiT's RASampler sends them to three GPUs in one global batch). Not measured: no ImageNet.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = 'imagenet2012'
  config.data.image_size = 224
  config.data.augment = 'inception_crop'
  config.data.normalization = 'imagenet'
  config.data.mixup_alpha = 0.8
  config.data.cutmix_alpha = 1.0
  config.data.random_erasing = 0.25
  config.data.rand_augment = 'rand-m9-mstd0.5-inc1'
  config.data.repeated_augment = 3
  config.model.variant = 'deit_small'
  config.model.drop_path_rate = 0.1
  config.model.dtype = 'bfloat16'
  config.train.batch_size = 1024
  config.train.num_epochs = 300
  config.train.warmup_epochs = 5.0
  config.train.initial_learning_rate = 1e-6
  config.train.final_learning_rate = 1e-5
  config.train.grad_clip_norm = 0.0
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 2000
  config.eval.batch_size = 1024
  return config
