"""Pictures of the patches a pruner keeps at each layer (pruned ones greyed), as RL4EViT's Fig. 5.

`kept_masks` runs the pruned forward (every process: it is one jitted program);
`kept_patches_figure` draws on whatever process the caller chooses and returns the figure unsaved.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from matplotlib import figure

from vitprune_jax import pruning
from vitprune_jax.models import vit


def kept_masks(
  model: vit.VisionTransformer,
  params: Any,
  images: jax.Array,
  pruner: pruning.Pruner,
  rng: jax.Array,
) -> np.ndarray:
  """(B, L, N) keep masks after each layer, in mask execution so token positions stay fixed.

  `images` may be a global array sharded over a mesh; the masks come back whole on every host.
  """

  def fn(params, images, rng):
    masks = []
    inner = pruning.make_selector(pruner, execution='mask', rng=rng)

    def recording(layer, x, keep_mask, stats):
      x, keep_mask = inner(layer, x, keep_mask, stats)
      masks.append(keep_mask)
      return x, keep_mask

    model.apply({'params': params}, images, token_selector=recording)
    return jnp.stack(masks, axis=1)

  return multihost_utils.process_allgather(jax.jit(fn)(params, images, rng), tiled=True)


def kept_patches_figure(
  images: np.ndarray, masks: np.ndarray, vit_cfg: vit.ViTConfig, title: str
) -> figure.Figure:
  """One row per image: the input, then its kept patches after each block (pruned ones greyed).

  Args:
    images: (n, H, W, C) inputs, any range (each is min-max scaled for display).
    masks: (n, L, N) keep masks from `kept_masks` (slot 0 is CLS).
    vit_cfg: the model's geometry (patch grid, depth).
    title: the figure's title.

  Returns:
    A bare `matplotlib.figure.Figure` (no pyplot state to close); the caller saves it.
  """
  grid = vit_cfg.image_size // vit_cfg.patch_size
  layers = vit_cfg.num_layers
  fig = figure.Figure(figsize=(1.6 * (layers + 1), 1.6 * len(images)))
  axes = fig.subplots(len(images), layers + 1, squeeze=False)
  for i, image in enumerate(np.asarray(images)):
    shown = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    shown = np.repeat(shown, 3, axis=-1) if shown.shape[-1] == 1 else shown
    axes[i, 0].imshow(shown)
    axes[i, 0].set_title('input' if i == 0 else '', fontsize=8)
    for layer in range(layers):
      patch_mask = masks[i, layer, 1:].reshape(grid, grid)
      pixel_mask = np.kron(patch_mask, np.ones((vit_cfg.patch_size, vit_cfg.patch_size)))[..., None]
      axes[i, layer + 1].imshow(shown * pixel_mask + 0.85 * (1 - pixel_mask))
      if i == 0:
        axes[i, layer + 1].set_title(
          f'after block {layer}\n{int(masks[i, layer].sum())} tokens', fontsize=7
        )
  for ax in axes.ravel():
    ax.set_axis_off()
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig
