"""One of two JAX processes that save 20 steps of latest and best checkpoints into one run dir.

  python tests/scripts/checkpoint_two_hosts.py PORT PROCESS_ID WORKDIR

Joins the coordinator on localhost:PORT (process 0 runs it), saves replicated params and optimizer
state at steps 1..20 (validation accuracy = step / 100, so the best is the last), waits for the
background writes and prints `saved <process id>`. Run by tests/test_checkpoints.py.
"""

import sys

import jax
import jax.numpy as jnp

from vitprune_jax import checkpoints, parallel


def main(port: str, process_id: str, workdir: str) -> None:
  jax.distributed.initialize(f'localhost:{port}', 2, int(process_id))
  replicated = parallel.replicated_sharding(parallel.make_mesh())
  params, opt = jax.jit(
    lambda: ({'w': jnp.ones((64, 64))}, {'mu': jnp.zeros((64, 64)), 'step': jnp.array(0)}),
    out_shardings=replicated,
  )()
  ckpt = checkpoints.Checkpointer(workdir)
  for step in range(1, 21):
    ckpt.save(step, params, opt, {'val_accuracy': step / 100}, best=True)
  ckpt.wait()
  ckpt.close()
  print('saved', jax.process_index())


if __name__ == '__main__':
  main(*sys.argv[1:])
