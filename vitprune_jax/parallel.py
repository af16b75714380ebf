"""Data parallelism over every device of every host, declared once: a 1-D mesh named 'data'.

Params are replicated, batches are split along their leading axis; `jax.jit` then inserts the gradient
all-reduce itself, so the same step function runs on 1 CPU, 8 simulated devices or a TPU pod.
"""
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitprune_jax.errors import UserError

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, what: str) -> None:
  """Fails early, with the fix, when a global batch cannot be split evenly over the devices."""
  n = jax.device_count()
  if global_batch_size <= 0 or global_batch_size % n:
    raise UserError(f'{what}={global_batch_size} must be a positive multiple of the device count ({n}); '
                    f'set --config.{what} to a multiple of {n}.')


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of a batch into global arrays split over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated_sharding(mesh))
