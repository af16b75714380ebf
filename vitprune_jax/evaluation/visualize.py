"""Pictures of which patches a pruner keeps at each layer (pruned patches greyed), like RL4EViT's Fig. 5."""
import io
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from vitprune_jax import parallel, pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.models import vit


def save_figure(fig: plt.Figure, path: str, dpi: int) -> None:
  """Writes a PNG through tf.io.gfile, so a gs:// workdir works like a local one, and frees the figure."""
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=dpi)
  plt.close(fig)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(png.getvalue())


def kept_masks(model: vit.VisionTransformer, params: Any, images: jax.Array, pruner: pruning.Pruner,
               rng: jax.Array) -> np.ndarray:
  """(B, L, N) keep masks after each layer, in mask mode so token positions stay fixed; on every host."""

  def fn(params, images, rng):
    masks = []
    inner = pruning.make_selector(pruner, mode='mask', rng=rng)

    def recording(layer, x, keep_mask, stats):
      x, keep_mask = inner(layer, x, keep_mask, stats)
      masks.append(keep_mask)
      return x, keep_mask

    model.apply({'params': params}, images, token_selector=recording)
    return jnp.stack(masks, axis=1)

  return multihost_utils.process_allgather(jax.jit(fn)(params, images, rng), tiled=True)


def draw_kept_patches(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any, split: str,
                      path: str, mesh: jax.sharding.Mesh) -> str:
  """Every process runs the forward on the first global eval batch (it is one jitted program); process 0 draws."""
  cfg = model.config
  n_images = config.prune.visualize_images
  pruner = pruning.make_pruner(config.prune.visualize_pruner, cfg, r_max=config.prune.r_max,
                               alpha=config.prune.alpha)
  ds = input_pipeline.make_dataset(config, split, global_batch_size=config.eval.batch_size, train=False)
  batch = parallel.shard_batch(next(input_pipeline.as_numpy(ds)), mesh)
  masks = kept_masks(model, params, batch['image'], pruner, jax.random.PRNGKey(config.seed))[:n_images]
  images = multihost_utils.process_allgather(batch['image'], tiled=True)[:n_images]
  if jax.process_index() != 0:
    return path
  grid = cfg.image_size // cfg.patch_size
  layers = cfg.num_layers
  fig, axes = plt.subplots(len(images), layers + 1, figsize=(1.6 * (layers + 1), 1.6 * len(images)),
                           squeeze=False)
  for i, image in enumerate(images):
    shown = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    shown = np.repeat(shown, 3, axis=-1) if shown.shape[-1] == 1 else shown
    axes[i, 0].imshow(shown)
    axes[i, 0].set_title('input' if i == 0 else '', fontsize=8)
    for layer in range(layers):
      patch_mask = masks[i, layer, 1:].reshape(grid, grid)
      pixel_mask = np.kron(patch_mask, np.ones((cfg.patch_size, cfg.patch_size)))[..., None]
      axes[i, layer + 1].imshow(shown * pixel_mask + 0.85 * (1 - pixel_mask))
      if i == 0:
        axes[i, layer + 1].set_title(f'after block {layer}\n{int(masks[i, layer].sum())} tokens', fontsize=7)
  for ax in axes.ravel():
    ax.set_axis_off()
  fig.suptitle(f'{pruner.name} (r_max={config.prune.r_max}, alpha={config.prune.alpha}): kept patches; pruned '
               'ones greyed', fontsize=9)
  fig.tight_layout()
  save_figure(fig, path, dpi=110)
  return path
