"""Flax Vision Transformers with per-token statistics and keep masks for pruning."""
from vitprune_jax.models.vit import (PRESETS, ModelAux, TokenStats, ViTConfig, VisionTransformer, create_model,
                                     token_statistics, vit_config_from)
