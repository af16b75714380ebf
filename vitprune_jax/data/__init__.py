"""Input data: `make_dataset` serves every dataset through one deterministic tf.data pipeline."""
from vitprune_jax.data.input_pipeline import as_numpy
from vitprune_jax.data.input_pipeline import DatasetInfo
from vitprune_jax.data.input_pipeline import get_info
from vitprune_jax.data.input_pipeline import make_dataset
