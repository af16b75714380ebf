"""A ViT and its params from a run directory (`mode=train` or `mode=import_weights`).

The checkpoint's own metadata holds the model geometry, so a checkpoint loads without the config
that trained it. Nothing here reads data; jobs check the checkpoint against their dataset.
"""

from typing import Any, Optional

import jax
import jax.numpy as jnp

from vitprune_jax import checkpoints, parallel
from vitprune_jax.models import vit


def load_vit(
  path: str, mesh: Optional[jax.sharding.Mesh] = None
) -> tuple[vit.VisionTransformer, Any, dict[str, Any]]:
  """(model, params, meta) of the checkpoint under `path` (best, else latest).

  Args:
    path: a run directory, or its `best` / `checkpoints` subdirectory.
    mesh: params are replicated over it (default: every device).

  Returns:
    The VisionTransformer the checkpoint was trained with, its params and its metadata, plus
    `checkpoint_dir` and `checkpoint_step`.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  ckpt_dir, step, meta = checkpoints.read_meta(path)
  vit_cfg = vit.ViTConfig(**meta['model'])
  model = vit.create_model(vit_cfg)
  image = jnp.zeros((1, vit_cfg.image_size, vit_cfg.image_size, vit_cfg.num_channels))
  params_like = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), image)['params'])
  replicated = parallel.replicated_sharding(mesh)
  params_like = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), params_like
  )
  params = checkpoints.load_params(ckpt_dir, step, params_like)
  return model, params, dict(meta, checkpoint_dir=ckpt_dir, checkpoint_step=step)
