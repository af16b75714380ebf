"""Base config: every experiment config starts from `get_config()` here and changes a few fields.

Keys are fixed here (the dict is locked), so a misspelt `--config.<key>` override fails at parse time.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # train | evaluate
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'digits'  # digits | fashion_mnist | cifar10 | imagenet2012
  config.dataset.data_dir = ''  # TFDS data_dir ('' = TFDS default).
  config.dataset.manual_dir = ''  # TFDS manual_dir (ImageNet tarballs).
  config.dataset.fashion_mnist_dir = '/usr/share/datasets/fashion-mnist'  # Debian's idx files.
  config.dataset.image_size = 8  # Side of the (square) image fed to the model.
  config.dataset.augment = 'crop'  # none | crop | crop_flip | inception_crop
  config.dataset.normalization = 'minus_one_to_one'  # minus_one_to_one | imagenet
  config.dataset.val_fraction = 0.1  # Offline datasets: share of train held out for validation.
  config.dataset.test_fraction = 0.2  # digits only: it has no official test split.
  config.dataset.shuffle_buffer = 50_000
  config.dataset.prefetch = 2

  config.model = ml_collections.ConfigDict()
  config.model.variant = 'digits'  # A preset of vitprune_jax.models.vit.PRESETS ('S/16', 'deit_small', ...).
  # Geometry overrides; 0 = take the preset's value.
  config.model.patch_size = 0
  config.model.hidden_size = 0
  config.model.num_layers = 0
  config.model.num_heads = 0
  config.model.mlp_dim = 0
  config.model.dropout_rate = 0.0
  config.model.dtype = 'float32'  # float32 | bfloat16 (compute dtype; params stay fp32).

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64  # Global batch over all devices and hosts.
  config.train.num_epochs = 30
  config.train.learning_rate = 1e-3
  config.train.warmup_epochs = 2.0
  config.train.weight_decay = 0.05
  config.train.label_smoothing = 0.1
  config.train.grad_clip_norm = 1.0
  config.train.log_every_steps = 50
  config.train.checkpoint_every_steps = 500  # Plus one save at the end of every epoch.
  config.train.halt_after_steps = 0  # >0: stop this invocation after that many steps (rerun resumes).

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.split = 'test'  # Split reported by mode='evaluate'.
  config.eval.checkpoint_dir = ''  # '' = <workdir>/checkpoints; set to reuse another run's model.
  return config
