"""Fair fine-tuning on the benchmark model: one copy of the ViT per method, each fine-tuned on
its own pruning at the budget-mode policy's capacities, each scored on its own copy (reuses
runs/fashion, runs/fashion_budget_s0 (results/budget_mappo) and runs/fashion_budget_merge_prior_s0
(results/merge_mappo)).

  python -m vitprune_jax.main --config configs/fashion_mnist_finetune.py \
      --workdir runs/fashion_finetune
  python -m vitprune_jax.main --config configs/fashion_mnist_finetune.py:steered \
      --workdir runs/fashion_finetune_steered

Methods: none (the unpruned ViT fine-tuned for the same epochs: the reference), random,
similarity, cls_attention and both policies (dropping; trained merging with the similarity
prior), at b = 0.766 (the Pareto job's 0.55x level), and the merging methods at the most GFLOPs
not above it: ToMe (over its r) and similarity+merge (the strongest merging rule of the Pareto
table), each fine-tuned with its merging in the loop. The recipe (4 epochs, lr 2e-4, warm-up 0.2
epoch) was chosen on validation for RL4EViT's fine-tuning of the free-mode policy (4 epochs over
2: 88.72 % vs 88.65 % there) and is used unchanged for every method.

`steered`: the same recipe and level for ToMe steered by similarity and ToMe steered by each of
both policies (compared with the first run's copies: same recipe, same original ViT), at the
weight of (0.1, 0.25, 0.5, 1.0) most accurate on validation before fine-tuning
(`finetune.steer_weights`).
"""

from configs import fashion_mnist_vit


def get_config(variant: str = ''):
  config = fashion_mnist_vit.get_config()
  config.mode = 'finetune'
  config.init.vit_dir = 'runs/fashion'
  config.init.policy_dirs = ('runs/fashion_budget_s0', 'runs/fashion_budget_merge_prior_s0')
  config.finetune.methods = (
    'none',
    'random',
    'similarity',
    'cls_attention',
    'tome',
    'similarity+merge',
    'policy',
  )
  if variant == 'steered':
    config.finetune.methods = ('tome+similarity', 'tome+policy')
  config.deploy.budgets = (0.766,)
  config.train.prune_from_epoch = 0
  config.train.num_epochs = 4
  config.train.learning_rate = 2e-4
  config.train.warmup_epochs = 0.2
  return config
