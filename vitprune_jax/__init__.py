"""Token pruning for Vision Transformers in JAX/Flax."""
