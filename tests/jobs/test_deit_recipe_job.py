"""DeiT's recipe end to end on TFDS's offline mock of ImageNet: train with RandAugment, repeated
augmentation, mixup, cutmix, random erasing and stochastic depth, then fine-tune with cls_attention
at the deit_standard schedule in the loop, distilling the first run (KL on logits, MSE on kept
tokens), as the pod configs do."""

import pytest
import tensorflow_datasets as tfds

from configs import imagenet_deit_s, imagenet_deit_s_finetune
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import train

pytestmark = pytest.mark.usefixtures('one_device_jobs', 'fast_compile')


def _tiny(config, data_dir):
  config.data.data_dir = data_dir
  config.data.image_size = 32
  config.model.dtype = 'float32'
  config.model.patch_size = 8  # 16 patches + CLS.
  config.model.hidden_size = 16
  config.model.num_layers = 4
  config.model.num_heads = 2
  config.model.mlp_dim = 32
  config.train.batch_size = 16
  config.train.num_epochs = 1
  config.train.warmup_epochs = 0.5
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 100
  config.eval.batch_size = 8
  config.eval.throughput_repeats = 0
  return config


def test_deit_recipe_then_distilled_pruning_finetune(fake_prepared_tfds, no_network, tmp_path):
  data_dir = fake_prepared_tfds('imagenet2012', {'train': 100, 'validation': 8})
  mock = tfds.testing.mock_data(
    num_examples=100, data_dir=data_dir, policy=tfds.testing.MockPolicy.USE_FILES
  )
  teacher_dir, student_dir = str(tmp_path / 'deit'), str(tmp_path / 'ft')
  with mock:
    config = _tiny(imagenet_deit_s.get_config(), data_dir)
    assert (config.data.mixup_alpha, config.data.cutmix_alpha) == (0.8, 1.0)
    assert (config.data.random_erasing, config.model.drop_path_rate) == (0.25, 0.1)
    assert (config.data.rand_augment, config.data.repeated_augment) == ('rand-m9-mstd0.5-inc1', 3)
    _, first = train.train_and_evaluate(config, teacher_dir)
    assert first['steps'] == 6  # 99 training examples (train[:99%]) at batch 16.

    ft = _tiny(imagenet_deit_s_finetune.get_config(), data_dir)
    ft.init.vit_dir = ft.distill.teacher_dir = teacher_dir
    _, tuned = train.train_and_evaluate(ft, student_dir)
    # deit_standard on 4 blocks: 0.7, 0.49, 0.343 of the 16 patches after blocks 0, 1, 2.
    assert tuned['tokens_per_layer_pruned'] == [12.0, 8.0, 6.0, 6.0]
    assert 0.0 <= tuned['test_accuracy'] <= 1.0

    ft.train.pruner = 'tome'
    with pytest.raises(UserError, match='token distillation compares tokens'):
      train.train_and_evaluate(ft, str(tmp_path / 'tome'))
  assert not no_network
