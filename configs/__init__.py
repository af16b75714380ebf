"""Experiment configs (ml_collections). `default.py` holds every key; the others change a few."""
