"""The config's contract: renamed keys, and one-line checks of every value before a job starts.

`configs/default.py` defines the keys. `check(config)` rejects what a job would otherwise trip over
later (an unknown choice, a ratio outside [0, 1], a negative count), each with one line that names
the key and the fix, so a bad `--config.<key>=<value>` never reaches a traceback or a half-written
workdir.
"""

import re
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from vitprune_jax.errors import UserError

_RAND_AUGMENT = re.compile(r'rand(-(mstd\d+(\.\d*)?|mmax\d+|inc\d+|m\d+|n[1-9]\d*))*')

# Keys of earlier versions -> their replacement (a ConfigDict path), so an old command line or
# config file fails with one line that says what to write instead.
RENAMED = {
  **{
    f'dataset.{k}': f'data.{k}'
    for k in (
      'name data_dir manual_dir fashion_mnist_dir image_size augment normalization '
      'val_fraction test_fraction shuffle_buffer prefetch'
    ).split()
  },
  'eval.checkpoint_dir': 'init.vit_dir',
  'train.init_from': 'init.vit_dir',
  'prune.mode': 'prune.execution',
  'prune.train_pruner': 'train.pruner',
  'prune.prune_from_epoch': 'train.prune_from_epoch',
  'prune.throughput_repeats': 'eval.throughput_repeats',
  'prune.visualize_pruner': 'viz.pruner',
  'prune.visualize_images': 'viz.num_images',
  'prune.sweep_pruner': 'sweep.pruner',
  'prune.sweep_alphas': 'sweep.alphas',
  'prune.sweep_r_maxes': 'sweep.r_maxes',
  'prune.sweep_split': 'sweep.split',
  'prune.sweep_tolerance': 'sweep.tolerance',
  'rl.policy_dir': 'init.policy_dirs',
  **{
    f'rl.{k}': f'ppo.{k}'
    for k in (
      'actor_lr critic_lr gamma gae_lambda clip_eps value_clip_eps entropy_coef value_coef '
      'max_grad_norm num_minibatches hidden_size normalize_advantages num_envs num_updates'
    ).split()
  },
  'rl.num_epochs': 'ppo.update_epochs',
  'rl.log_every': 'ppo.log_every_steps',
  'rl.checkpoint_every': 'ppo.checkpoint_every_steps',
  'rl.policy': 'game.policy',
  'rl.alpha': 'game.accuracy_weight',
  'rl.beta': 'game.efficiency_weight',
  **{
    f'rl.{k}': f'game.{k}'
    for k in (
      'accuracy_clip pruning_points target_prune_ratio ratio_penalty two_agent_point'
    ).split()
  },
  'rl.capacity_quantile': 'deploy.capacity_quantile',
  'rl.capacity_bucket': 'deploy.capacity_bucket',
  'rl.finetune_pruner': 'finetune.train_on',
}

MODES = ('train', 'evaluate', 'sweep', 'pareto', 'train_policy', 'finetune', 'import_weights')
SPLITS = ('train', 'validation', 'test')


def renamed_message(key: str) -> str | None:
  """The one line for an old key (or an old section such as `rl`), None if `key` was never
  renamed."""
  if key in RENAMED:
    return f'config key {key!r} is now {RENAMED[key]!r}; write --config.{RENAMED[key]}=...'
  if key in {k.split('.')[0] for k in RENAMED} - {'eval', 'train', 'prune'}:
    news = sorted({v.split('.')[0] for k, v in RENAMED.items() if k.startswith(key + '.')})
    return f'config section {key!r} was split into {", ".join(news)}; see configs/default.py'
  return None


def _flat(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'section.key': value} of a config."""
  return _flat(config.to_dict())


def _choice(*choices: str) -> Callable[[Any], str | None]:
  return lambda v: None if v in choices else f'choose one of: {", ".join(choices)}'


def _in_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False):
  def check(v):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    left, right = '(' if lo_open else '[', ')' if hi_open else ']'
    return None if ok else f'must be a number in {left}{lo}, {hi}{right}'

  return check


def _int_at_least(lo: int):
  def check(v):
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo
    return None if ok else f'must be an integer >= {lo}'

  return check


def _rand_augment(v):
  # The shape of timm's string only (no TensorFlow before the checks pass);
  # vitprune_jax.data.rand_augment.parse reads it.
  ok = isinstance(v, str) and (not v or _RAND_AUGMENT.fullmatch(v) is not None)
  return None if ok else "must be timm's RandAugment string like 'rand-m9-mstd0.5-inc1' or ''"


def _positive(v):
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
  return None if ok else 'must be a positive number'


def _non_negative(v):
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
  return None if ok else 'must be a non-negative number'


def _ints(v):
  ok = isinstance(v, (tuple, list)) and all(isinstance(i, int) and i >= 0 for i in v)
  return None if ok else 'must be a tuple of non-negative block indices, e.g. (2, 5, 8)'


def _names(v):
  ok = isinstance(v, (tuple, list)) and len(v) > 0 and all(isinstance(i, str) for i in v)
  return None if ok else "must be a non-empty tuple of names, e.g. ('none', 'cls_attention')"


def _numbers(check_one):
  def check(v):
    if not isinstance(v, (tuple, list)) or not v:
      return 'must be a non-empty tuple of numbers'
    return next((f'{x!r}: {m}' for x in v if (m := check_one(x))), None)

  return check


def _paths(v):
  ok = isinstance(v, (tuple, list)) and all(isinstance(i, str) and i for i in v)
  return None if ok else "must be a tuple of directories, e.g. ('runs/fashion_mappo',)"


# Checks of values whose meaning needs no other module; names of pruners, policies, datasets and
# model presets are checked where their registries live (jobs/common.py), with the same one-line
# form.
CHECKS = {
  'mode': _choice(*MODES),
  'distributed.initialize': _choice('auto', 'yes', 'no'),
  'data.name': _choice('digits', 'fashion_mnist', 'cifar10', 'imagenet2012'),
  'data.image_size': _int_at_least(1),
  'data.augment': _choice('none', 'crop', 'crop_flip', 'inception_crop'),
  'data.normalization': _choice('minus_one_to_one', 'imagenet'),
  'data.val_fraction': _in_range(0.0, 1.0, hi_open=True),
  'data.test_fraction': _in_range(0.0, 1.0, hi_open=True),
  'data.shuffle_buffer': _int_at_least(1),
  'data.prefetch': _int_at_least(0),
  'model.patch_size': _int_at_least(0),
  'model.hidden_size': _int_at_least(0),
  'model.num_layers': _int_at_least(0),
  'model.num_heads': _int_at_least(0),
  'model.mlp_dim': _int_at_least(0),
  'model.dropout_rate': _in_range(0.0, 1.0, hi_open=True),
  'model.drop_path_rate': _in_range(0.0, 1.0, hi_open=True),
  'data.mixup_alpha': _non_negative,
  'data.cutmix_alpha': _non_negative,
  'data.mixup_switch_prob': _in_range(0.0, 1.0),
  'data.mixup_prob': _in_range(0.0, 1.0),
  'data.random_erasing': _in_range(0.0, 1.0),
  'data.repeated_augment': _int_at_least(1),
  'data.rand_augment': _rand_augment,
  'distill.logit_weight': _non_negative,
  'distill.token_weight': _non_negative,
  'distill.temperature': _positive,
  'model.dtype': _choice('float32', 'bfloat16'),
  'train.batch_size': _int_at_least(1),
  'train.num_epochs': _int_at_least(0),
  'train.learning_rate': _non_negative,
  'train.warmup_epochs': _non_negative,
  'train.initial_learning_rate': _non_negative,
  'train.final_learning_rate': _non_negative,
  'train.weight_decay': _non_negative,
  'train.label_smoothing': _in_range(0.0, 1.0, hi_open=True),
  'train.grad_clip_norm': _non_negative,
  'train.log_every_steps': _int_at_least(1),
  'train.checkpoint_every_steps': _int_at_least(1),
  'train.halt_after_steps': _int_at_least(0),
  'train.prune_from_epoch': _int_at_least(0),
  'eval.batch_size': _int_at_least(1),
  'eval.split': _choice(*SPLITS),
  'eval.throughput_repeats': _int_at_least(0),
  'init.policy_dirs': _paths,
  'pretrained.format': _choice('auto', 'npz', 'torch', 'safetensors'),
  'pretrained.head': _choice('auto', 'keep', 'reset'),
  'pretrained.posemb_resize': _choice('bilinear', 'bicubic'),
  'prune.pruners': _names,
  'prune.r_max': _in_range(0.0, 1.0),
  'prune.alpha': _positive,
  'prune.schedule': _choice('keep_ratio', 'deit_standard'),
  'prune.execution': _choice('compact', 'mask'),
  'prune.tome_r': _int_at_least(0),
  'prune.tome_steer_weight': _non_negative,
  'prune.evit_keep_rate': _in_range(0.0, 1.0, lo_open=True),
  'prune.evit_layers': _ints,
  'sweep.alphas': _numbers(_positive),
  'sweep.r_maxes': _numbers(_in_range(0.0, 1.0)),
  'sweep.split': _choice(*SPLITS),
  'sweep.tolerance': _non_negative,
  'viz.num_images': _int_at_least(0),
  'ppo.actor_lr': _non_negative,
  'ppo.critic_lr': _non_negative,
  'ppo.gamma': _in_range(0.0, 1.0),
  'ppo.gae_lambda': _in_range(0.0, 1.0),
  'ppo.clip_eps': _positive,
  'ppo.value_clip_eps': _non_negative,
  'ppo.entropy_coef': _non_negative,
  'ppo.value_coef': _non_negative,
  'ppo.max_grad_norm': _positive,
  'ppo.update_epochs': _int_at_least(1),
  'ppo.num_minibatches': _int_at_least(1),
  'ppo.hidden_size': _int_at_least(1),
  'ppo.num_envs': _int_at_least(1),
  'ppo.rollouts_per_input': _int_at_least(1),
  'ppo.num_updates': _int_at_least(0),
  'ppo.log_every_steps': _int_at_least(1),
  'ppo.checkpoint_every_steps': _int_at_least(1),
  'game.policy': _choice('mappo', 'two_agent'),
  'game.accuracy_clip': _positive,
  'game.pruning_points': _ints,
  'game.target_prune_ratio': _in_range(0.0, 1.0, hi_open=True),
  'game.ratio_penalty': _non_negative,
  'game.two_agent_point': _int_at_least(0),
  'game.compute_target': _in_range(0.0, 1.0, hi_open=True),
  'game.lagrange_lr': _non_negative,
  'game.action_mode': _choice('free', 'budget'),
  'game.budget_schedule': _choice('geometric', 'cls_attention'),
  'game.budget_alpha': _positive,
  'game.budget_range': _numbers(_in_range(0.0, 1.0)),
  'viz.background_images': _int_at_least(0),
  'deploy.capacity_quantile': _in_range(0.0, 1.0, lo_open=True),
  'deploy.capacity_bucket': _int_at_least(1),
  'deploy.budgets': _numbers(_in_range(0.0, 1.0)),
  'deploy.random_seeds': _int_at_least(1),
  'pareto.levels': _numbers(_in_range(0.0, 1.0, lo_open=True, hi_open=True)),
  'pareto.steer_weights': lambda v: None if tuple(v) == () else _numbers(_non_negative)(v),
  'finetune.train_on': _choice('policy', 'deployed'),
  'finetune.steer_weights': _numbers(_non_negative),
}


def check_keys(keys: Iterable[str], known: Iterable[str]) -> None:
  """Fails on the first key not in `known`, naming its replacement when it was renamed."""
  known = set(known)
  for key in keys:
    if key not in known:
      message = renamed_message(key)
      raise UserError(
        message or f'unknown config key {key!r}; valid keys are in configs/default.py'
      )


def defaults() -> ml_collections.ConfigDict | None:
  """configs/default.py's config (None where the repo's configs/ package is not importable)."""
  try:
    from configs import default  # noqa: PLC0415  (the repo's configs, not part of the library)
  except ImportError:
    return None
  return default.get_config()


def check(
  config: ml_collections.ConfigDict, default: ml_collections.ConfigDict | None = None
) -> None:
  """One-line UserError for the first unknown key (against `default`, else configs/default.py) or
  bad value of `config`."""
  values = flat(config)
  default = defaults() if default is None else default
  if default is not None:
    check_keys(values, flat(default))
  for key, check_value in CHECKS.items():
    message = check_value(values[key])
    if message:
      raise UserError(f'--config.{key}={values[key]!r}: {message}.')
