"""`mode=import_weights`: a foreign checkpoint becomes `<workdir>/best`, as `mode=train` writes it.

The model is the one `config.model` and `config.data` describe (no data is read); the weights come
from `config.pretrained.path` through `models.pretrained.load_pretrained`. Every other mode then
starts from the import with `--config.init.vit_dir=<workdir>`.
"""

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from vitprune_jax import checkpoints, parallel
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import common
from vitprune_jax.models import pretrained

RESULTS_FILE = 'import_weights_results.json'


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Converts `config.pretrained.path` into a checkpoint; returns what RESULTS_FILE holds.

  A missing path, an occupied workdir or weights that do not fit the model are one-line errors that
  leave the workdir as it was.
  """
  p = config.pretrained
  if not p.path:
    raise UserError(
      'import_weights needs --config.pretrained.path (a .npz, .bin/.pt/.pth or .safetensors file).'
    )
  for sub in (checkpoints.BEST_DIR, checkpoints.LATEST_DIR):
    existing = epath.Path(workdir) / sub
    if existing.is_dir() and any(existing.iterdir()):
      raise UserError(
        f'{existing} already holds a checkpoint; import into a new --workdir (nothing was changed).'
      )
  spec = common.data_spec(config)
  _, image_shape = input_pipeline.model_input(spec)
  vit_cfg, params, source = pretrained.load_pretrained(
    p.path,
    common.vit_config(config),
    fmt=p.format,
    head=p.head,
    posemb_resize=p.posemb_resize,
    drop_distillation_token=p.drop_distillation_token,
  )
  params = parallel.replicate(params, parallel.make_mesh())
  source_path = p.path if '://' in p.path else os.path.abspath(p.path)
  # `dataset` and `image_shape` are the meta keys every checkpoint of this project holds.
  meta = dict(
    model=dataclasses.asdict(vit_cfg),
    dataset=spec.name,
    image_shape=list(image_shape),
    epoch=0,
    step=0,
    seed=config.seed,
    imported_from=source_path,
    source_format=source.format,
    source_naming=source.naming,
    import_notes=source.notes,
  )
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save_params(0, params, meta)
  ckpt.wait()
  ckpt.close()
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  results = dict(
    checkpoint_dir=os.path.join(workdir, checkpoints.BEST_DIR),
    source=source_path,
    format=source.format,
    naming=source.naming,
    num_params=num_params,
    notes=source.notes,
    model=meta['model'],
  )
  common.write_json(workdir, RESULTS_FILE, results)
  logging.info(
    'Imported %s (%s, %s naming, %d params) into %s; start other modes from it with '
    '--config.init.vit_dir=%s.',
    p.path,
    source.format,
    source.naming,
    num_params,
    results['checkpoint_dir'],
    workdir,
  )
  return results
