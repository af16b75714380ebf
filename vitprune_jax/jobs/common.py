"""What every job does the same way: config -> library arguments, the reused ViT, result files.

Jobs are the only code that reads the ConfigDict; this module turns its sections into the explicit
arguments the library takes (a `DataSpec`, a `ViTConfig`, a `Pruner`), loads the checkpoint a job
starts from, and writes `<stem>.{json,csv,md}` and PNGs through tf.io.gfile (so gs:// workdirs work
too), on process 0 only.
"""

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, Optional

import jax
import matplotlib
import ml_collections
import numpy as np
import tensorflow as tf
from clu import metric_writers

from vitprune_jax import models, parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.errors import UserError
from vitprune_jax.evaluation import compare
from vitprune_jax.models import vit

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def data_spec(config: ml_collections.ConfigDict) -> input_pipeline.DataSpec:
  d = config.data
  return input_pipeline.DataSpec(
    name=d.name,
    image_size=d.image_size,
    augment=d.augment,
    normalization=d.normalization,
    val_fraction=d.val_fraction,
    test_fraction=d.test_fraction,
    shuffle_buffer=d.shuffle_buffer,
    prefetch=d.prefetch,
    data_dir=d.data_dir,
    manual_dir=d.manual_dir,
    fashion_mnist_dir=d.fashion_mnist_dir,
    rand_augment=d.rand_augment,
    repeated_augment=d.repeated_augment,
    seed=config.seed,
  )


def vit_config(config: ml_collections.ConfigDict) -> vit.ViTConfig:
  """The ViT that `config.model` and `config.data` describe (reads no data)."""
  num_classes, image_shape = input_pipeline.model_input(data_spec(config))
  m = config.model
  return vit.make_vit_config(
    m.variant,
    num_classes=num_classes,
    image_size=image_shape[0],
    num_channels=image_shape[-1],
    patch_size=m.patch_size,
    hidden_size=m.hidden_size,
    num_layers=m.num_layers,
    num_heads=m.num_heads,
    mlp_dim=m.mlp_dim,
    dropout_rate=m.dropout_rate,
    drop_path_rate=m.drop_path_rate,
    dtype=m.dtype,
  )


def check_batch(config: ml_collections.ConfigDict, key: str) -> None:
  """A global batch (`section.key`) must split evenly over the devices."""
  section, name = key.split('.')
  parallel.check_global_batch(config[section][name], key)


def split_batches(
  config: ml_collections.ConfigDict, split: str
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
  """A callable giving a fresh pass over `split` in eval batches (every example once, padded)."""
  spec = data_spec(config)

  def batches():
    ds = input_pipeline.make_dataset(
      spec, split, global_batch_size=config.eval.batch_size, train=False
    )
    return input_pipeline.as_numpy(ds)

  return batches


def warm_up(batches_fn: Callable[[], Iterator[Any]]) -> None:
  """One untimed pass, so the first timed evaluation does not pay for reading the data."""
  for _ in batches_fn():
    pass


def load_vit(
  config: ml_collections.ConfigDict, path: str, mesh: jax.sharding.Mesh
) -> tuple[vit.VisionTransformer, Any, dict[str, Any]]:
  """`models.load_vit`, checked against the data `config.data` gives (image shape, classes)."""
  model, params, meta = models.load_vit(path, mesh)
  ckpt_dir = meta['checkpoint_dir']
  num_classes, image_shape = input_pipeline.model_input(data_spec(config))
  if tuple(meta['image_shape']) != tuple(image_shape):
    raise UserError(
      f'The checkpoint in {ckpt_dir} was trained on images of shape {tuple(meta["image_shape"])} '
      f'but {config.data.name} with this config gives {image_shape}; set '
      f'--config.data.image_size={meta["image_shape"][0]} (or use the matching dataset).'
    )
  if model.config.num_classes != num_classes:
    raise UserError(
      f'The checkpoint in {ckpt_dir} has {model.config.num_classes} classes but '
      f'{config.data.name} has {num_classes}; evaluate it on the dataset it was trained on.'
    )
  return model, params, meta


# The config key of each pruner option.
PRUNER_OPTION_KEYS = {
  'r_max': 'r_max',
  'alpha': 'alpha',
  'schedule': 'schedule',
  'r': 'tome_r',
  'steer': 'tome_steer',
  'steer_weight': 'tome_steer_weight',
  'keep_rate': 'evit_keep_rate',
  'layers': 'evit_layers',
}


def heuristic(config: ml_collections.ConfigDict, name: str, vit_cfg: vit.ViTConfig):
  """A heuristic, merging or fusion pruner by name with its `prune.*` options; None for 'none'."""
  if name == 'none':
    return None
  options = {
    o: config.prune[PRUNER_OPTION_KEYS[o]] for o in pruning.pruner_options(name) if o != 'layers'
  }
  if 'layers' in pruning.pruner_options(name):
    options['layers'] = tuple(config.prune.evit_layers)
  return pruning.make_pruner(name, vit_cfg, **options)


def compare_on_split(
  config: ml_collections.ConfigDict,
  model: vit.VisionTransformer,
  params: Any,
  named: list[tuple[str, Any]],
  split: str,
  mesh: jax.sharding.Mesh,
  *,
  throughput_repeats: int,
  warm: bool = True,
  seed: Optional[int] = None,
  with_correct: bool = False,
) -> list[dict[str, Any]]:
  """`compare.compare_pruners` on `split` with the config's execution and seed (or `seed`);
  records carry the split. `warm`: one untimed pass over the split first (skip it when the split
  was just read)."""
  batches = split_batches(config, split)
  if warm:
    warm_up(batches)
  records = compare.compare_pruners(
    model,
    params,
    named,
    batches,
    mesh=mesh,
    execution=config.prune.execution,
    rng=jax.random.PRNGKey(config.seed if seed is None else seed),
    throughput_repeats=throughput_repeats,
    with_correct=with_correct,
  )
  for r in records:
    r['split'] = split
  return records


def write_records(
  workdir: str, stem: str, records: list[dict[str, Any]], summary: dict[str, Any], table: str
) -> None:
  """Process 0 writes `<stem>.{json,md,csv}`."""
  if jax.process_index() != 0:
    return
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, f'{stem}.json'), 'w') as f:
    json.dump(dict(summary, records=records), f, indent=2)
  with tf.io.gfile.GFile(os.path.join(workdir, f'{stem}.md'), 'w') as f:
    f.write(table)
  keys = list(dict.fromkeys(k for r in records for k in r))  # Union, in first-seen order.
  with tf.io.gfile.GFile(os.path.join(workdir, f'{stem}.csv'), 'w') as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for r in records:
      writer.writerow(
        {k: (' '.join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()}
      )


def provenance(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """What made a result: the command line, the config and the git commit of the code (with
  `dirty` when the tree had changes; None outside a git checkout)."""
  here = os.path.dirname(os.path.abspath(__file__))

  def git(*args):
    try:
      out = subprocess.run(['git', *args], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
      return None
    return out.stdout.strip() if out.returncode == 0 else None

  commit = git('rev-parse', 'HEAD')
  status = git('status', '--porcelain', '--untracked-files=no') if commit else None
  return {
    'command': ' '.join(['python -m vitprune_jax.main'] + sys.argv[1:]),
    'git_commit': commit,
    'git_dirty': bool(status) if commit else None,
    'config': json.loads(config.to_json_best_effort()),
  }


def write_json(workdir: str, name: str, values: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, name), 'w') as f:
    json.dump(values, f, indent=2)


def save_figure(fig: plt.Figure, path: str, dpi: int) -> None:
  """Process 0 writes the figure as a PNG; every process frees it."""
  if jax.process_index() == 0:
    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=dpi)
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(png.getvalue())
  plt.close(fig)


def metric_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard summaries in `workdir` on process 0 (no console copy: the job logs one line per
  epoch or per logging step itself); nothing on the other processes."""
  if jax.process_index() == 0:
    return metric_writers.SummaryWriter(workdir)
  return metric_writers.MultiWriter([])


def print_table(table: str) -> None:
  if jax.process_index() == 0:
    print(table, flush=True)
