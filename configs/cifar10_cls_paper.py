"""The CLS-attention paper's CIFAR-10 model as it was (seed 002, its src/config.py): 48x48 upscaled
images in patches of 4 (144 patches + CLS), 8 blocks, 512 wide, 8 heads, MLP 2048
(`cls_paper_cifar10`, 25.3 M parameters), trained unpruned for 4 epochs and then with CLS-attention
pruning (0.6, 2) in compact mode, as the paper's pruned training.

  python -m vitprune_jax.main --config configs/cifar10_cls_paper.py --workdir runs/cifar10_paper \
      --config.data.data_dir=/data/tfds

Needs TFDS's cifar10 prepared in --config.data.data_dir (README, "Other datasets"); not measured
here (no download on the development machine). `configs/cifar10_vit.py` is the small model with
the same token geometry.
"""

from configs import cifar10_vit


def get_config():
  config = cifar10_vit.get_config()
  config.model.variant = 'cls_paper_cifar10'
  config.train.pruner = 'cls_attention'
  return config
