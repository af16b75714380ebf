"""Evaluation of trained (and pruned) models."""
