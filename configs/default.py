"""Base config: every experiment config starts from `get_config()` here and changes a few fields.

Keys are fixed here (the dict is locked), so a misspelt `--config.<key>` override fails at parse time.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # train | evaluate | sweep | train_policy | finetune | import_weights
  config.seed = 0

  # Multi-host runs (vitprune_jax/parallel.py, launch/): join one JAX runtime before anything else touches JAX.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = 'auto'  # auto (a multi-process launch in the env) | yes | no
  config.distributed.coordinator_address = ''  # host:port of process 0; '' = JAX_COORDINATOR_ADDRESS or detected.
  config.distributed.num_processes = 0  # 0 = JAX_NUM_PROCESSES or detected.
  config.distributed.process_id = -1  # -1 = JAX_PROCESS_ID or detected.

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
  config.train.init_from = ''  # A train or import_weights workdir whose params start this run (fine-tuning).

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.split = 'test'  # Split reported by mode='evaluate'.
  config.eval.checkpoint_dir = ''  # '' = <workdir>/checkpoints; set to reuse another run's model.

  # mode='import_weights' (vitprune_jax/models/pretrained.py): a foreign checkpoint becomes <workdir>/best.
  config.pretrained = ml_collections.ConfigDict()
  config.pretrained.path = ''  # .npz (vision_transformer, big_vision), .bin/.pt/.pth (torch) or .safetensors.
  config.pretrained.format = 'auto'  # auto (by extension) | npz | torch | safetensors
  config.pretrained.head = 'auto'  # auto (zero-init if the class count differs) | keep | reset (always zero-init)
  config.pretrained.posemb_resize = 'bilinear'  # Grid interpolation when the image size differs: bilinear | bicubic
  config.pretrained.drop_distillation_token = False  # Distilled DeiT: drop dist token and head (changes logits).

  # Token pruning (see vitprune_jax/pruning). Schedule: keep_ratio(l) = 1 - r_max * ((l + 1) / L) ** alpha.
  config.prune = ml_collections.ConfigDict()
  config.prune.pruners = ('none',)  # evaluate: pruners compared on one checkpoint, in this order.
  config.prune.r_max = 0.6
  config.prune.alpha = 2.0
  config.prune.mode = 'compact'  # evaluate: compact (real token removal) | mask (same numbers, no speedup).
  config.prune.train_pruner = 'none'  # train: prune during training (compact mode) with this pruner...
  config.prune.prune_from_epoch = 4  # ...from this epoch on (seed 002 trains 4 epochs unpruned first).
  config.prune.throughput_repeats = 5  # Timed forwards per pruner (median reported), after a warm-up.
  config.prune.visualize_pruner = 'cls_attention'  # evaluate: pruner drawn in pruning_visualization.png...
  config.prune.visualize_images = 4  # ...for this many eval images (0 = no picture).
  config.prune.sweep_pruner = 'cls_attention'  # sweep: pruner whose schedule is swept...
  config.prune.sweep_alphas = (1.0, 1.2, 1.5, 2.0, 3.0)
  config.prune.sweep_r_maxes = (0.5, 0.6, 0.7, 0.8, 0.9)
  config.prune.sweep_split = 'validation'  # ...on this split (choose schedules on validation, never test)...
  config.prune.sweep_tolerance = 0.004  # ...selecting the cheapest within this accuracy drop of unpruned.

  # Learned pruning policies (vitprune_jax/rl): the MAPPO learner's settings.
  config.rl = ml_collections.ConfigDict()
  config.rl.actor_lr = 3e-4
  config.rl.critic_lr = 1e-3
  config.rl.gamma = 0.99
  config.rl.gae_lambda = 0.95
  config.rl.clip_eps = 0.2  # PPO ratio clip.
  config.rl.value_clip_eps = 0.2  # Value-function clip around the rollout's values.
  config.rl.entropy_coef = 0.01
  config.rl.value_coef = 0.5
  config.rl.max_grad_norm = 1.0
  config.rl.num_epochs = 4  # PPO epochs per update.
  config.rl.num_minibatches = 4  # Per epoch, over all (env, step, agent) samples.
  config.rl.hidden_size = 64  # Width of the actor's and the critic's MLPs (two hidden layers).
  config.rl.normalize_advantages = True
  # The pruning game (mode='train_policy'): which policy, its rewards, and how long to train.
  config.rl.policy = 'mappo'  # mappo (RL4EViT: per-token agents at every pruning point) | two_agent (seed 000).
  config.rl.alpha = 1.0  # Weight of the shared accuracy reward.
  config.rl.beta = 0.03  # mappo: weight of each pruned token's efficiency reward (0.5 prunes everything).
  config.rl.accuracy_clip = 5.0  # Floor on the log-probability change in the accuracy reward.
  config.rl.pruning_points = ()  # mappo: blocks after which agents act; () = every block but the last.
  config.rl.target_prune_ratio = 0.5  # two_agent: share of patches to prune...
  config.rl.ratio_penalty = 2.0  # ...and lambda in reward = accuracy - lambda * |achieved - target|.
  config.rl.two_agent_point = 0  # two_agent: the block after which both agents vote.
  config.rl.num_envs = 64  # Images (episodes) per update, global.
  config.rl.num_updates = 200
  config.rl.log_every = 10
  config.rl.checkpoint_every = 50
  # Compact-mode capacity per layer: this quantile of the tokens the policy keeps on validation images, rounded
  # up to the bucket. Images that want more keep their best-scored tokens; 1.0 = never cut a decision.
  config.rl.capacity_quantile = 0.9
  config.rl.capacity_bucket = 4
  config.rl.policy_dir = ''  # evaluate: a train_policy workdir whose policy joins the comparison.
  # finetune: what the ViT sees while it trains: 'policy' (RL4EViT: the policy's own decisions, mask mode) or
  # 'deployed' (the compact-mode pruner inference runs: capacities from validation, filled by the policy's scores).
  config.rl.finetune_pruner = 'policy'
  return config
