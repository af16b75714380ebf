"""Evaluation of trained (and pruned) models on explicit batches: metrics, comparisons, figures.

Nothing here reads a config or the data, writes files or prints: the jobs (`vitprune_jax/jobs/`) do.
"""
