"""Data parallelism over every device of every host, declared once: a 1-D mesh named 'data'.

Params are replicated, batches are split along their leading axis; `jax.jit` then inserts the
gradient all-reduce itself, so the same step function runs on 1 CPU, 8 simulated devices or a TPU
pod. Several hosts first join one JAX runtime with `maybe_initialize_distributed`.
"""

import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vitprune_jax.errors import UserError

DATA_AXIS = 'data'
INITIALIZE_CHOICES = ('auto', 'yes', 'no')


def detect_multiprocess_launch(env: Mapping[str, str] = os.environ) -> Optional[str]:
  """Names the multi-process launch the environment shows (None: a plain single-process run).

  Mirrors what `jax.distributed.initialize()` (jax 0.10.2) can fill in by itself, but only counts
  launches with more than one process, so a 1-task SLURM job or an `mpirun -n 1` stays a plain run.
  """
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return 'JAX_COORDINATOR_ADDRESS'
  slurm_tasks = env.get('SLURM_STEP_NUM_TASKS') or env.get('SLURM_NTASKS') or '1'
  if (
    all(k in env for k in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID', 'SLURM_LOCALID'))
    and slurm_tasks.isdigit()
    and int(slurm_tasks) > 1
  ):
    return 'SLURM'
  if 'OMPI_MCA_orte_hnp_uri' in env and int(env.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1:
    return 'Open MPI'
  workers = env.get('TPU_PROCESS_ADDRESSES') or env.get('TPU_WORKER_HOSTNAMES') or ''
  if ',' in workers:
    return 'TPU pod (GKE)'
  if (
    _running_in_cloud_tpu_vm()
  ):  # GCE pod workers learn their peers from the metadata server, not the env.
    return 'Cloud TPU VM'
  return None


def _running_in_cloud_tpu_vm() -> bool:
  """Set by `import jax` when libtpu finds TPU chips; private, so a missing attribute
  just means no."""
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', False))


def maybe_initialize_distributed(
  initialize: str = 'auto',
  coordinator_address: str = '',
  num_processes: int = 0,
  process_id: int = -1,
  env: Mapping[str, str] = os.environ,
) -> bool:
  """Joins this process to a multi-process JAX run when the arguments or the launch ask for it.

  Args:
    initialize: 'auto' (when the environment shows a multi-process launch) | 'yes' | 'no'.
    coordinator_address: host:port of process 0; '' = JAX_COORDINATOR_ADDRESS or detected.
    num_processes: 0 = JAX_NUM_PROCESSES or detected.
    process_id: -1 = JAX_PROCESS_ID or detected.
    env: the environment to read (os.environ).


  Must run before anything touches a JAX device. The coordinator, process count and id come from the
  config, else from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (the launch scripts
  set these; jax itself reads only the first), else jax's own SLURM / Open MPI / TPU detection.
  Returns whether it initialized.
  """
  if initialize not in INITIALIZE_CHOICES:
    raise UserError(
      f'--config.distributed.initialize={initialize!r}: choose one of '
      f'{", ".join(INITIALIZE_CHOICES)}.'
    )
  coordinator = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS') or None
  num_processes = num_processes if num_processes > 0 else _env_int(env, 'JAX_NUM_PROCESSES')
  process_id = process_id if process_id >= 0 else _env_int(env, 'JAX_PROCESS_ID')
  launch = 'config.distributed' if coordinator_address else detect_multiprocess_launch(env)
  if initialize == 'no' or (initialize == 'auto' and launch is None):
    return False
  kwargs = {}
  if None not in (coordinator, num_processes, process_id):
    # Everything is given: skip jax's cluster detection, whose SLURM branch would also pin each
    # process to one GPU (SLURM_LOCALID) and so break one process per host. JAX_LOCAL_DEVICE_IDS
    # still applies.
    kwargs['cluster_detection_method'] = 'deactivate'
  logging.info(
    'Initializing the JAX distributed runtime (%s): coordinator %s, process %s of %s.',
    launch or 'forced',
    coordinator or 'auto',
    process_id if process_id is not None else 'auto',
    num_processes or 'auto',
  )
  try:
    jax.distributed.initialize(coordinator, num_processes, process_id, **kwargs)
  except (ValueError, TypeError) as e:
    raise UserError(
      f'jax.distributed.initialize failed: {" ".join(str(e).split())} Set JAX_COORDINATOR_ADDRESS, '
      'JAX_NUM_PROCESSES and JAX_PROCESS_ID (or --config.distributed.*), or launch with '
      'launch/gpu_multihost.sh.'
    ) from e
  return True


def _env_int(env: Mapping[str, str], name: str) -> Optional[int]:
  value = env.get(name, '').strip()
  if not value:
    return None
  if not value.isdigit():
    raise UserError(f'{name}={value!r} must be a non-negative integer.')
  return int(value)


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D data mesh over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_global_batch(global_batch_size: int, what: str) -> None:
  """Fails early, with the fix, when a global batch cannot be split evenly over the devices."""
  n = jax.device_count()
  if global_batch_size <= 0 or global_batch_size % n:
    raise UserError(
      f'{what}={global_batch_size} must be a positive multiple of the device count ({n}); '
      f'set --config.{what} to a multiple of {n}.'
    )


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of a batch into global arrays split over the mesh."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated_sharding(mesh))
