"""Helpers shared by the tests: the default config, a tiny, fast digits configuration and a free port."""
import importlib.util
import pathlib
import socket

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_default_config() -> ml_collections.ConfigDict:
  """configs/ is not a package, so load default.py by path (as config_flags would); unlocked copy."""
  spec = importlib.util.spec_from_file_location('vitprune_default_config', REPO / 'configs' / 'default.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config().copy_and_resolve_references()
  config.unlock()
  return config


def tiny_config(config: ml_collections.ConfigDict, epochs: int = 2) -> ml_collections.ConfigDict:
  """A 1-layer, 16-wide ViT on digits: 9 steps an epoch, a few seconds a run."""
  config.dataset.name = 'digits'
  config.dataset.image_size = 8
  config.model.variant = 'digits'
  config.model.hidden_size = 16
  config.model.num_layers = 1
  config.model.num_heads = 2
  config.model.mlp_dim = 32
  config.train.batch_size = 128
  config.train.num_epochs = epochs
  config.train.learning_rate = 3e-3
  config.train.log_every_steps = 4
  config.train.checkpoint_every_steps = 3
  config.eval.batch_size = 256
  return config


def free_port() -> int:
  """A TCP port free right now on localhost, for a multi-process test's JAX coordinator."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]
