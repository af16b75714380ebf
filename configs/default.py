"""Base config: every key of the project, by concern, each with its unit and effect.

Experiment configs import this file and change only what differs (`from configs import default`).
Keys are fixed here (config_flags locks the dict), so a misspelt `--config.<key>` override fails at
parse time, a renamed key names its replacement (`vitprune_jax/jobs/config.py`), and every value is
checked before a job starts.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # The job: train | evaluate | sweep | pareto | train_policy | finetune | import_weights
  # (vitprune_jax/jobs/).
  config.mode = 'train'
  config.seed = 0  # Seeds params, data order, augmentation, dropout and the policies' sampling.

  # Multi-host runs (vitprune_jax/parallel.py, launch/): join one JAX runtime before anything else.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = 'auto'  # auto (a multi-process launch in the env) | yes | no.
  config.distributed.coordinator_address = ''  # host:port of process 0; '' = from the env.
  config.distributed.num_processes = 0  # 0 = JAX_NUM_PROCESSES or detected.
  config.distributed.process_id = -1  # -1 = JAX_PROCESS_ID or detected.

  # What the model sees (vitprune_jax/data).
  config.data = ml_collections.ConfigDict()
  config.data.name = 'digits'  # digits | fashion_mnist | cifar10 | imagenet2012.
  config.data.data_dir = ''  # TFDS data_dir ('' = TFDS default).
  config.data.manual_dir = ''  # TFDS manual_dir (ImageNet tarballs).
  config.data.fashion_mnist_dir = '/usr/share/datasets/fashion-mnist'  # Debian's idx files.
  config.data.image_size = 8  # Side in pixels of the (square) image fed to the model.
  config.data.augment = 'crop'  # Training augmentation: none | crop | crop_flip | inception_crop.
  config.data.normalization = 'minus_one_to_one'  # Pixel scaling: minus_one_to_one | imagenet.
  config.data.val_fraction = 0.1  # Offline datasets: share of train held out for validation.
  config.data.test_fraction = 0.2  # digits only (it has no official test split): share for test.
  # RandAugment after the crop and flip, per image in tf.data (vitprune_jax/data/rand_augment.py):
  # timm's string, DeiT's is 'rand-m9-mstd0.5-inc1'; '' = off.
  config.data.rand_augment = ''
  # Repeated augmentation (DeiT's RASampler): an epoch holds a random 1/r of the images, each r
  # times in a row with its own augmentation; the epoch keeps its length. 1 = off, DeiT: 3.
  config.data.repeated_augment = 1
  # On-device batch augmentation in training (vitprune_jax/training/augment.py; DeiT: mixup 0.8,
  # cutmix 1.0, erasing 0.25). Targets are mixed with the same lambda as the images.
  config.data.mixup_alpha = 0.0  # Beta(a, a) of mixup; 0 = off.
  config.data.cutmix_alpha = 0.0  # Beta(a, a) of cutmix; 0 = off.
  config.data.mixup_switch_prob = 0.5  # Both on: the chance a batch gets cutmix, not mixup.
  config.data.mixup_prob = 1.0  # The chance a batch is mixed at all.
  config.data.random_erasing = 0.0  # Per-image chance of random erasing (N(0, 1) pixel noise).
  config.data.shuffle_buffer = 50_000  # Examples in the training shuffle buffer.
  config.data.prefetch = 2  # Batches tf.data prepares ahead.

  # The ViT (vitprune_jax/models/vit.py).
  config.model = ml_collections.ConfigDict()
  config.model.variant = 'digits'  # A preset of vitprune_jax.models.vit.PRESETS ('S/16', ...).
  config.model.patch_size = 0  # Pixels per patch side; 0 = the preset's. Same for the four below.
  config.model.hidden_size = 0  # Token width.
  config.model.num_layers = 0  # Transformer blocks.
  config.model.num_heads = 0  # Attention heads per block.
  config.model.mlp_dim = 0  # Hidden width of each block's MLP.
  config.model.dropout_rate = 0.0  # Dropout after attention, in the MLP and on the embeddings.
  # Stochastic depth of the last block (linear from 0 at block 0; DeiT-S: 0.1), in training only.
  config.model.drop_path_rate = 0.0
  config.model.dtype = 'float32'  # Compute dtype: float32 | bfloat16 (params stay float32).

  # Supervised training (mode=train, and the ViT updates of mode=finetune).
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64  # Global batch over all devices and hosts.
  config.train.num_epochs = 30  # Passes over the training split.
  config.train.learning_rate = 1e-3  # Peak AdamW learning rate (cosine decay to the final one).
  config.train.warmup_epochs = 2.0  # Linear warm-up from the initial rate to the peak, in epochs.
  config.train.initial_learning_rate = 0.0  # Where the warm-up starts (DeiT: 1e-6).
  config.train.final_learning_rate = 0.0  # Where the cosine ends, at the last step (DeiT: 1e-5).
  config.train.weight_decay = 0.05  # AdamW decay on matrices (not on biases, norms, CLS).
  config.train.label_smoothing = 0.1  # Smoothing of the one-hot targets.
  config.train.grad_clip_norm = 1.0  # Global-norm clip of the gradients; 0 = none (DeiT's).
  config.train.log_every_steps = 50  # Training metrics cadence.
  config.train.checkpoint_every_steps = 500  # Checkpoint cadence (plus one at each epoch's end).
  # > 0: stop this invocation after that many steps (rerun resumes).
  config.train.halt_after_steps = 0
  # Pruned training (CLS-attention paper): from `prune_from_epoch` on, the training forward runs
  # this pruner (a name of vitprune_jax.pruning.PRUNERS) in compact mode, with the `prune` schedule.
  config.train.pruner = 'none'
  config.train.prune_from_epoch = 4  # Epochs trained unpruned first.

  # Evaluation settings shared by every job that scores a model.
  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256  # Global eval batch.
  config.eval.split = 'test'  # Split reported at the end of a job (choices are made on validation).
  # Timed forwards per pruner (median reported), after a warm-up.
  config.eval.throughput_repeats = 5

  # Distillation from a frozen teacher in mode=train and finetune (DynamicViT's recipe): loss = CE +
  # logit_weight * T^2 * KL(teacher || student at temperature T) + token_weight * MSE between the
  # final kept patch tokens of both. The teacher runs unpruned inside the same jitted step.
  config.distill = ml_collections.ConfigDict()
  config.distill.teacher_dir = ''  # The teacher's run directory; '' = no distillation.
  config.distill.logit_weight = 0.5  # Weight of the KL on the logits (DynamicViT: 0.5).
  # Weight of the kept-token MSE (DynamicViT: 0.5); > 0 trains a scoring pruner in mask mode, so
  # the student's tokens stay at the teacher's positions.
  config.distill.token_weight = 0.0
  config.distill.temperature = 1.0  # Softmax temperature of the KL (DynamicViT: 1).

  # What a job starts from.
  config.init = ml_collections.ConfigDict()
  # A ViT run directory (mode=train or import_weights). train: fine-tune from it ('' = from
  # scratch); evaluate, sweep: the model scored ('' = this --workdir); train_policy, finetune:
  # required.
  config.init.vit_dir = ''
  # train_policy workdirs: evaluate compares them, finetune uses the first.
  config.init.policy_dirs = ()

  # mode=import_weights: a foreign checkpoint becomes <workdir>/best.
  config.pretrained = ml_collections.ConfigDict()
  # .npz (vision_transformer, big_vision), .bin/.pt/.pth or .safetensors.
  config.pretrained.path = ''
  config.pretrained.format = 'auto'  # auto (by extension) | npz | torch | safetensors.
  config.pretrained.head = 'auto'  # auto (zero-init if the class count differs) | keep | reset.
  config.pretrained.posemb_resize = 'bilinear'  # Position grid interpolation: bilinear | bicubic.
  config.pretrained.drop_distillation_token = False  # Distilled DeiT: drop its token and head.

  # Token pruning (vitprune_jax/pruning): keep_ratio(l) = 1 - r_max * ((l + 1) / L) ** alpha.
  config.prune = ml_collections.ConfigDict()
  config.prune.pruners = ('none',)  # evaluate: the pruners compared, in this order.
  # Counts of every scoring pruner: keep_ratio (the formula above, r_max and alpha) | deit_standard
  # (keep 0.7 / 0.49 / 0.343 of the patches after blocks 3 / 6 / 9 of 12, EViT's and DynamicViT's).
  config.prune.schedule = 'keep_ratio'
  config.prune.r_max = 0.6  # Share of the remaining patches pruned after the last block, in [0, 1].
  config.prune.alpha = 2.0  # Schedule exponent (> 0): higher prunes later.
  config.prune.tome_r = 4  # tome: tokens merged away in every block (ToMe's r).
  # tome: a scoring heuristic whose high-scored tokens its matching spares (steered ToMe, named
  # tome+<name>, at prune.tome_steer_weight); '' = ToMe.
  config.prune.tome_steer = ''
  config.prune.tome_steer_weight = 0.25  # tome: the penalty per standard deviation of the score.
  config.prune.evit_keep_rate = 0.7  # evit: share of the patch tokens kept at each EViT layer.
  config.prune.evit_layers = ()  # evit: blocks where it fuses; () = L/4, L/2, 3L/4 (3, 6, 9 of 12).
  # compact (tokens really removed) | mask (same numbers, no speedup).
  config.prune.execution = 'compact'

  # mode=sweep: a grid over the schedule (CLS-attention paper, section 5), chosen on `split`.
  config.sweep = ml_collections.ConfigDict()
  config.sweep.pruner = 'cls_attention'  # The pruner whose schedule is swept.
  config.sweep.alphas = (1.0, 1.2, 1.5, 2.0, 3.0)  # Values of prune.alpha tried.
  config.sweep.r_maxes = (0.5, 0.6, 0.7, 0.8, 0.9)  # Values of prune.r_max tried.
  config.sweep.split = 'validation'  # Split the schedules are scored on (never test).
  # Choose the cheapest schedule within this accuracy drop of unpruned.
  config.sweep.tolerance = 0.004

  # mode=evaluate: the picture of the kept patches (pruning_visualization.png).
  config.viz = ml_collections.ConfigDict()
  config.viz.pruner = 'cls_attention'  # Pruner drawn; 'none' = no picture.
  config.viz.num_images = 4  # Eval images drawn; 0 = no picture.
  # evaluate: share of each pruner's kept patches that are background, over this many eval images.
  config.viz.background_images = 0

  # The MAPPO learner (vitprune_jax/rl/learner.py), for mode=train_policy.
  config.ppo = ml_collections.ConfigDict()
  config.ppo.actor_lr = 3e-4  # Adam learning rate of the shared actor.
  config.ppo.critic_lr = 1e-3  # Adam learning rate of the centralised critic.
  config.ppo.gamma = 0.99  # Discount per pruning point.
  config.ppo.gae_lambda = 0.95  # GAE lambda.
  config.ppo.clip_eps = 0.2  # PPO ratio clip.
  # Value clip around the rollout's values; 0 = none (the clip is absolute and the returns are
  # unnormalised log-probability changes of up to accuracy_clip, so a 0.2 clip slows the critic).
  config.ppo.value_clip_eps = 0.0
  config.ppo.entropy_coef = 0.01  # Weight of the entropy bonus.
  config.ppo.value_coef = 0.5  # Weight of the value loss.
  config.ppo.max_grad_norm = 1.0  # Global-norm clip of each network's gradients.
  config.ppo.update_epochs = 4  # PPO epochs over each rollout.
  config.ppo.num_minibatches = 4  # Minibatches per PPO epoch, over the (step, env) units.
  config.ppo.hidden_size = 64  # Width of the actor's and the critic's MLPs (two hidden layers).
  config.ppo.normalize_advantages = True  # Standardise advantages over the acting samples.
  config.ppo.num_envs = 64  # Images per update, global.
  # Plays of each image per update (K > 1: leave-one-out advantages over the K plays, episodes =
  # num_envs * K); 1 = GAE with the critic's values.
  config.ppo.rollouts_per_input = 1
  config.ppo.num_updates = 200  # Updates in the run.
  config.ppo.log_every_steps = 10  # Metrics cadence, in updates.
  config.ppo.checkpoint_every_steps = 50  # Checkpoint cadence, in updates.

  # mode=pareto: every method at matched GFLOPs levels, on eval.split, in compact mode. The
  # capacities at a level are those of the budget game (game.pruning_points, game.budget_schedule,
  # game.budget_alpha) at the budget that comes closest to the level from below; learned policies
  # (budget mode, that game) come from init.policy_dirs, random is run deploy.random_seeds times.
  config.pareto = ml_collections.ConfigDict()
  config.pareto.levels = (0.8, 0.65, 0.55, 0.45)  # Shares of the unpruned GFLOPs.
  config.pareto.methods = ('greedy', 'cls_attention', 'mean_attention', 'similarity')  # Heuristics.
  config.pareto.mergers = ('tome', 'evit')  # Merging and fusion, at their own counts.
  # Also every scoring method's drop-merge variant (what it drops merges into what it keeps).
  config.pareto.drop_merge = False
  # Steered ToMe (ToMe whose matching spares what a score ranks high), by every steering heuristic
  # of pareto.methods (pruning.STEERS) and by every policy: the weights to choose from, per method
  # and level, by accuracy on pareto.select_split; () = none.
  config.pareto.steer_weights = ()
  config.pareto.select_split = 'validation'  # Where steered ToMe's weight is chosen.

  # The pruning game a policy learns (vitprune_jax/rl/pruning_env.py, two_agent_env.py).
  config.game = ml_collections.ConfigDict()
  # mappo (RL4EViT: per-token agents at every pruning point) | two_agent (attention + similarity).
  config.game.policy = 'mappo'
  config.game.accuracy_weight = 1.0  # Weight of the shared accuracy reward.
  config.game.efficiency_weight = 0.03  # mappo: weight of a pruned token's reward (0.5 prunes all).
  config.game.accuracy_clip = 5.0  # Floor on the log-probability change in the accuracy reward.
  config.game.pruning_points = ()  # mappo: blocks after which agents act; () = all but the last.
  config.game.target_prune_ratio = 0.5  # two_agent: share of patches to prune...
  # ...and lambda in reward = accuracy - lambda * |achieved - target|.
  config.game.ratio_penalty = 2.0
  config.game.two_agent_point = 0  # two_agent: the block after which both agents vote.
  # mappo, free mode: a target for the kept compute (the share of patch-block passes that run,
  # 'kept_compute'); > 0 makes efficiency_weight the initial value of a Lagrange multiplier that
  # moves by lagrange_lr * (kept_compute - target) after every update (RCPO). 0 = fixed weight.
  config.game.compute_target = 0.0
  config.game.lagrange_lr = 0.05  # The multiplier's step size per unit of constraint violation.
  # mappo: free (RL4EViT: each token decides alone) | budget (the tokens jointly keep exactly k_t
  # at point t, a Gumbel-top-k draw; no efficiency reward: the budget fixes the compute).
  config.game.action_mode = 'free'
  # budget mode: k_t = floor(P * b^(t+1)) (geometric) | seed 002's schedule with r_max = b
  # (cls_attention, exponent `budget_alpha`), for a budget b drawn per image from `budget_range`.
  config.game.budget_schedule = 'geometric'
  config.game.budget_alpha = 1.0  # budget mode, cls_attention schedule: its alpha.
  # mappo budget mode: pruned tokens merge into their most similar kept token (drop-merge) instead
  # of being dropped, in the game and when the policy is deployed.
  config.game.merge_dropped = False
  # mappo: the actor's logit adds -similarity_prior x the token's redundancy (a prior that ranks as
  # the similarity heuristic does; training learns corrections). 0 = no prior.
  config.game.similarity_prior = 0.0
  config.game.budget_range = (0.6, 0.9)  # budget mode: the range b is drawn from in training.

  # A learned policy at inference (compact mode needs a static capacity per layer).
  config.deploy = ml_collections.ConfigDict()
  # mappo: capacity = this quantile of the tokens the policy keeps on validation images, rounded up
  # to
  # `capacity_bucket`; images that want more keep their best-scored tokens. 1.0 = never cut a
  # decision.
  config.deploy.capacity_quantile = 0.9
  config.deploy.capacity_bucket = 4  # Capacities are multiples of this many tokens.
  # budget mode: the budgets b the policy is deployed and compared at (one row each), and the
  # one its checkpoints are selected at on validation (into best/; free mode keeps the last).
  config.deploy.budgets = (0.75,)
  # Seeds of the random baseline at each learned pruner's exact capacities (mean and 95 % CI).
  config.deploy.random_seeds = 5

  # mode=finetune: one copy of the ViT per method, each fine-tuned on its own pruning at the
  # policy's capacities (RL4EViT's second phase, done for every method alike), each scored on its
  # own copy; 'none' is the unpruned reference, 'policy' the first of init.policy_dirs.
  config.finetune = ml_collections.ConfigDict()
  # Each gets its own copy: none, 'policy' (every policy of init.policy_dirs), heuristics by name,
  # tome, evit, a heuristic's drop-merge variant '<name>+merge', ToMe steered by a heuristic
  # 'tome+<name>' or by every policy 'tome+policy' (merging methods at the most GFLOPs not above
  # the policy's capacities').
  config.finetune.methods = ('none', 'random', 'similarity', 'cls_attention', 'policy')
  # The policy's copy trains on: policy (RL4EViT: its own decisions, mask mode) | deployed (what
  # inference runs: validation capacities filled by the policy's scores, compact mode).
  config.finetune.train_on = 'policy'
  # Steered ToMe ('tome+<heuristic>', 'tome+policy'): the weights to choose from on validation,
  # with the ViT before fine-tuning.
  config.finetune.steer_weights = (0.1, 0.25, 0.5, 1.0)
  return config
