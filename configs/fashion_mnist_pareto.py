"""Every method on the Fashion-MNIST benchmark ViT at matched GFLOPs levels (issue 11's table).

  python -m vitprune_jax.main --config configs/fashion_mnist_pareto.py \
      --workdir runs/fashion_pareto

Needs runs/fashion (configs/fashion_mnist_vit.py) and three seeds (0-2, `--config.seed`) of each
of three budget-mode policies (configs/fashion_mnist_policy.py): `budget` (results/budget_mappo) in
runs/fashion_budget_s{0,1,2}, `budget_merge` in runs/fashion_budget_merge_s{0,1,2} and
`budget_merge_prior` in runs/fashion_budget_merge_prior_s{0,1,2}. Their game fixes the
capacities: every block but the last is a pruning point, geometric schedule. Test split, compact
mode, no fine-tuning. With the drop-merge variant of random, of every scoring heuristic and of the
policies (`pareto.drop_merge`), and ToMe steered by each heuristic's and each policy's scores
(`pareto.steer_weights`).
"""

from configs import fashion_mnist_vit


def get_config():
  config = fashion_mnist_vit.get_config()
  config.mode = 'pareto'
  config.init.vit_dir = 'runs/fashion'
  config.init.policy_dirs = tuple(
    f'runs/fashion_{name}_s{s}'
    for name in ('budget', 'budget_merge', 'budget_merge_prior')
    for s in range(3)
  )
  config.pareto.drop_merge = True
  # Steered ToMe by the heuristics and the policies, each at its best of these weights on the
  # validation split (per method, seed and level). The grid brackets what a first look on
  # validation found (ToMe r 8: 89.02 %; steered by the seed-0 similarity-prior policy at 0.1 /
  # 0.25 / 0.5 / 1.0: 89.07 / 89.32 / 89.18 / 89.17 %, by random scores 88.98 / 87.98 / 87.17).
  config.pareto.steer_weights = (0.1, 0.25, 0.5, 1.0)
  return config
