"""Pictures of which patches a pruner keeps at each layer (pruned patches greyed), like RL4EViT's Fig. 5."""
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from vitprune_jax import pruning
from vitprune_jax.data import input_pipeline
from vitprune_jax.models import vit


def kept_masks(model: vit.VisionTransformer, params: Any, images: jax.Array, pruner: pruning.Pruner,
               rng: jax.Array) -> np.ndarray:
  """(B, L, N) keep masks after each layer, in mask mode so token positions stay fixed."""

  def fn(params, images, rng):
    masks = []
    inner = pruning.make_selector(pruner, mode='mask', rng=rng)

    def recording(layer, x, keep_mask, stats):
      x, keep_mask = inner(layer, x, keep_mask, stats)
      masks.append(keep_mask)
      return x, keep_mask

    model.apply({'params': params}, images, token_selector=recording)
    return jnp.stack(masks, axis=1)

  return np.asarray(jax.jit(fn)(params, images, rng))


def draw_kept_patches(config: ml_collections.ConfigDict, model: vit.VisionTransformer, params: Any, split: str,
                      path: str) -> str:
  cfg = model.config
  n_images = config.prune.visualize_images
  pruner = pruning.make_pruner(config.prune.visualize_pruner, cfg, r_max=config.prune.r_max,
                               alpha=config.prune.alpha)
  ds = input_pipeline.make_dataset(config, split, global_batch_size=config.eval.batch_size, train=False)
  batch = next(input_pipeline.as_numpy(ds))
  images = batch['image'][:n_images]
  masks = kept_masks(model, params, jnp.asarray(images), pruner, jax.random.PRNGKey(config.seed))
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
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
