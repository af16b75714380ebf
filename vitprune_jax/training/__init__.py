"""Supervised training of the ViT."""
