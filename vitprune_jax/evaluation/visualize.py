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


def _image_rows(images: np.ndarray, layers: int):
  """A figure with one row per image: the input (min-max scaled, RGB) in column 0, `layers` more
  columns; returns (figure, axes, the scaled images)."""
  fig = figure.Figure(figsize=(1.6 * (layers + 1), 1.6 * len(images)))
  axes = fig.subplots(len(images), layers + 1, squeeze=False)
  shown_images = []
  for i, image in enumerate(np.asarray(images)):
    shown = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
    shown = np.repeat(shown, 3, axis=-1) if shown.shape[-1] == 1 else shown
    axes[i, 0].imshow(shown)
    axes[i, 0].set_title('input' if i == 0 else '', fontsize=8)
    shown_images.append(shown)
  return fig, axes, shown_images


def _finish(fig: figure.Figure, axes, title: str) -> figure.Figure:
  for ax in axes.ravel():
    ax.set_axis_off()
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


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
  fig, axes, shown_images = _image_rows(images, layers)
  for i, shown in enumerate(shown_images):
    for layer in range(layers):
      patch_mask = masks[i, layer, 1:].reshape(grid, grid)
      pixel_mask = np.kron(patch_mask, np.ones((vit_cfg.patch_size, vit_cfg.patch_size)))[..., None]
      axes[i, layer + 1].imshow(shown * pixel_mask + 0.85 * (1 - pixel_mask))
      if i == 0:
        axes[i, layer + 1].set_title(
          f'after block {layer}\n{int(masks[i, layer].sum())} tokens', fontsize=7
        )
  return _finish(fig, axes, title)


def merged_sources(
  model: vit.VisionTransformer, params: Any, images: jax.Array, pruner: pruning.Pruner
) -> np.ndarray:
  """(B, L, N, P) weights of the P patches in each token after each block, for a merging pruner
  (ToMe, EViT): which patches merged into which token, as ToMe's source tracing shows.

  One-hot sources (CLS none) ride along with the tokens through every merge, which averages or sums
  them as it does the tokens, so a weight > 0 means the patch is part of the token. The matching
  itself reads the keys, and steered ToMe's score the model's width of the tokens, so the extra
  columns do not change what merges.
  """
  if pruner.merger is None:
    raise ValueError(f'{pruner.name} does not merge tokens')
  cfg = model.config
  d, p = cfg.hidden_size, cfg.num_patches

  def fn(params, images):
    recorded = []
    sources = jnp.broadcast_to(
      jnp.eye(cfg.num_tokens, p, k=-1, dtype=jnp.float32), (images.shape[0], cfg.num_tokens, p)
    )

    def merge(layer, x, keep_mask, size, metric, stats):
      nonlocal sources
      both = jnp.concatenate([x.astype(jnp.float32), sources], axis=-1)
      both, keep_mask, size = pruner.merger.merge(layer, both, keep_mask, size, metric, stats)
      x, sources = both[..., :d].astype(x.dtype), both[..., d:]
      padded = jnp.zeros((x.shape[0], cfg.num_tokens, p)).at[:, : x.shape[1]].set(sources)
      recorded.append(padded)
      return x, keep_mask, size

    merger = pruner.merger._replace(merge=merge)
    model.apply({'params': params}, images, token_merger=merger)
    return jnp.stack(recorded, axis=1)

  return multihost_utils.process_allgather(jax.jit(fn)(params, images), tiled=True)


def merged_groups_figure(
  images: np.ndarray, sources: np.ndarray, vit_cfg: vit.ViTConfig, title: str
) -> figure.Figure:
  """One row per image: the input, then after each block every patch painted with the mean
  colour of the token it merged into (ToMe's Fig. 4 style); patches fused into EViT's extra token
  are painted likewise."""
  grid, ps = vit_cfg.image_size // vit_cfg.patch_size, vit_cfg.patch_size
  layers = vit_cfg.num_layers
  fig, axes, shown_images = _image_rows(images, layers)
  for i, shown in enumerate(shown_images):
    patches = shown.reshape(grid, ps, grid, ps, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, -1)
    for layer in range(layers):
      member = sources[i, layer] > 0  # (N, P)
      owner = np.argmax(member, axis=0)  # The token each patch is part of.
      means = np.stack(
        [
          patches[member[t]].mean(axis=0) if member[t].any() else patches[0] * 0
          for t in range(member.shape[0])
        ]
      )
      painted = means[owner].reshape(grid, grid, ps, ps, 3).transpose(0, 2, 1, 3, 4)
      axes[i, layer + 1].imshow(painted.reshape(grid * ps, grid * ps, 3))
      if i == 0:
        tokens = int(member.any(axis=1).sum()) + 1
        axes[i, layer + 1].set_title(f'after block {layer}\n{tokens} tokens', fontsize=7)
  return _finish(fig, axes, title)
