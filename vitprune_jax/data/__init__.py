"""Input data: one deterministic tf.data pipeline for every dataset, described by a `DataSpec`.

`make_dataset` makes one pass over a split; `train_batches` the training batches from a global step
on (exact resume); `get_info` and `model_input` give sizes and shapes.
"""

from vitprune_jax.data.input_pipeline import (
  DatasetInfo,
  as_numpy,
  get_info,
  make_dataset,
  model_input,
  train_batches,
)
from vitprune_jax.data.offline import DataSpec

__all__ = [
  'DataSpec',
  'DatasetInfo',
  'as_numpy',
  'get_info',
  'make_dataset',
  'model_input',
  'train_batches',
]
