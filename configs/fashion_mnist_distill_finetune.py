"""Pruning fine-tune with distillation on the benchmark model (DynamicViT's recipe, scaled down):
start from the benchmark ViT (runs/fashion), fine-tune 2 epochs with seed 002's cls_attention
(0.6, 2) in the loop from the first step, distilling the unpruned ViT: CE + 0.5 KL on the logits +
0.5 MSE on the kept final tokens (so the pruner trains in mask mode; the same decisions as compact).
The teacher's forward runs inside the same jitted step. lr 2e-4, warm-up 0.2 epoch: the fair
fine-tune recipe (configs/fashion_mnist_finetune.py).

  python -m vitprune_jax.main --config configs/fashion_mnist_distill_finetune.py \
      --workdir runs/fashion_distill_ft
  # The same fine-tune without distillation (compact mode):
  python -m vitprune_jax.main --config configs/fashion_mnist_distill_finetune.py \
      --workdir runs/fashion_plain_ft --config.distill.teacher_dir=

Measured (results/fashion_mnist/deit_recipe, one seed), pruned: distilled 89.17 % val / 87.53 %
test, without distillation 88.90 % val / 87.58 % test.
"""

from configs import fashion_mnist_vit


def get_config():
  config = fashion_mnist_vit.get_config()
  config.init.vit_dir = 'runs/fashion'
  config.distill.teacher_dir = 'runs/fashion'
  config.distill.token_weight = 0.5
  config.train.pruner = 'cls_attention'
  config.train.prune_from_epoch = 0
  config.train.num_epochs = 2
  config.train.learning_rate = 2e-4
  config.train.warmup_epochs = 0.2
  return config
