"""Fine-tune DeiT-S on ImageNet-1k with a token reducer in the loop, distilling the unpruned model
(DynamicViT's recipe: KL on the logits and MSE on the kept final tokens, both weight 0.5), 30 epochs
as EViT and DynamicViT. The reducer here is cls_attention at the literature's `deit_standard`
schedule (keep 0.7 / 0.49 / 0.343 of the patches after blocks 3 / 6 / 9); any pruner works
(--config.train.pruner=..., or a learned policy through mode=finetune).

  python -m vitprune_jax.main --config configs/imagenet_deit_s_finetune.py \
      --workdir runs/deit_s_prune_ft \
      --config.init.vit_dir=runs/imagenet_deit_s --config.distill.teacher_dir=runs/imagenet_deit_s \
      --config.data.manual_dir=/data/imagenet

The start and the teacher are a DeiT-S run (`configs/imagenet_deit_s.py`) or imported weights
(`configs/import_vit_b16.py` shows how). DeiT's augmentation stays on (inherited). lr 1e-4 at batch
1024 and 1 warm-up epoch are a starting point, not tuned here (no ImageNet offline); choose them on
validation. Not measured.
"""

from configs import imagenet_deit_s


def get_config():
  config = imagenet_deit_s.get_config()
  config.init.vit_dir = 'runs/imagenet_deit_s'
  config.distill.teacher_dir = 'runs/imagenet_deit_s'
  config.distill.token_weight = 0.5
  config.prune.schedule = 'deit_standard'
  config.train.pruner = 'cls_attention'
  config.train.prune_from_epoch = 0
  config.train.num_epochs = 30
  config.train.learning_rate = 1e-4
  config.train.warmup_epochs = 1.0
  return config
