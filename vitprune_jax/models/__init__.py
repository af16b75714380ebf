"""Flax Vision Transformers with per-token statistics and keep masks for pruning."""

from vitprune_jax.models.io import load_vit
from vitprune_jax.models.vit import (
  PRESETS,
  ModelAux,
  TokenSelector,
  TokenStats,
  VisionTransformer,
  ViTConfig,
  create_model,
  make_vit_config,
  token_statistics,
)

__all__ = [
  'PRESETS',
  'ModelAux',
  'TokenSelector',
  'TokenStats',
  'ViTConfig',
  'VisionTransformer',
  'create_model',
  'load_vit',
  'make_vit_config',
  'token_statistics',
]
