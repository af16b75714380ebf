"""Vision Transformer (ViT/DeiT) whose forward pass already carries what token pruning needs.

Every block returns the per-token statistics pruners rank by (CLS attention, mean received
attention, value-weighted CLS attention: `TokenStats`) without a second pass, and only those the
caller asks for: attention runs fused unless one needs the full attention map. A keep mask (B, N)
travels through the blocks: a dropped token is no longer a key for anyone and its own state is
frozen, so an all-ones mask is the plain ViT. A `token_selector` callback runs after each block;
pruning methods use it to change the mask (mask mode) or to gather the kept tokens into fewer slots
(compact mode). Layers are a Python loop rather than `nn.scan` because compact mode changes the
token count between blocks.

The forward pass is three stages, each a method that works on a batch:
`embed` (images -> tokens), `block` (one encoder block) and `readout` (final norm, head on CLS).
`__call__` composes them; code that must stop between blocks (the RL environments) calls them
through `model.apply({'params': params}, ..., method='block')`.

Parameter names follow google-research/vision_transformer (`Transformer/encoderblock_0/...`), so
official checkpoints map onto them one to one, and every checkpoint this project wrote still loads.
"""

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitprune_jax.errors import UserError

Array = jax.Array
# (layer index, tokens (B, N, D), keep mask (B, N), statistics of that layer)
#   -> (tokens, keep mask).
TokenSelector = Callable[[int, Array, Array, 'TokenStats'], tuple[Array, Array]]


class TokenMerger(NamedTuple):
  """Token merging (ToMe) or fusion (EViT) between the attention and the MLP of every block.

  `merge(layer, x (B, N, D), keep_mask (B, N), size (B, N), metric (B, N, head_dim), stats)` ->
  (x, keep_mask, size) with fewer tokens; `metric` is the block's keys averaged over heads and
  `size` the number of patches each token stands for. With `proportional_attention`, log(size) is
  added to the attention logits of every block (ToMe's proportional attention).
  """

  merge: Callable[..., tuple[Array, Array, Array]]
  proportional_attention: bool = False
  kind: str = ''  # 'tome' | 'evit' | 'drop_merge': how the FLOPs counter prices the merge.
  # True: `merge` runs after the MLP instead (a pruner's selection that merges what it drops,
  # `pruning.execution.drop_merger`), with the same arguments.
  after_block: bool = False


_MASK_BIAS = -1e9  # Added to attention logits of dropped keys (in fp32).
DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  """Static geometry of a ViT; hashable so it can be a field of a Flax module."""

  num_classes: int
  image_size: int
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  num_channels: int = 3
  dropout_rate: float = 0.0
  # Stochastic depth: block i skips its attention and MLP residual branches for a whole example
  # with probability drop_path_rate * i / (L - 1) in training (DeiT's, timm's linear rule).
  drop_path_rate: float = 0.0
  dtype: str = 'float32'
  # Numerics of imported checkpoints (models/pretrained.py): HF ViT/DeiT use LayerNorm epsilon
  # 1e-12, and the JAX vision_transformer/big_vision checkpoints were trained with
  # tanh-approximated GELU.
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = False

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def num_tokens(self) -> int:
    return self.num_patches + 1


# name: (patch_size, hidden_size, num_layers, num_heads, mlp_dim). ViT and DeiT share geometry
# (timm naming); the small presets are for the offline datasets. Seed 002's CIFAR-10 model (its
# src/config.py: 48x48 images, patch 4, so 144 patches + CLS; 8 blocks, 512 wide, 8 heads, MLP
# 2048) is `cls_paper_cifar10`; `cifar10_small` keeps its token geometry and depth at 192 wide.
PRESETS = {
  'Ti/16': (16, 192, 12, 3, 768),
  'S/16': (16, 384, 12, 6, 1536),
  'B/16': (16, 768, 12, 12, 3072),
  'vit_tiny': (16, 192, 12, 3, 768),
  'vit_small': (16, 384, 12, 6, 1536),
  'vit_base': (16, 768, 12, 12, 3072),
  'deit_tiny': (16, 192, 12, 3, 768),
  'deit_small': (16, 384, 12, 6, 1536),
  'deit_base': (16, 768, 12, 12, 3072),
  'cls_paper_cifar10': (4, 512, 8, 8, 2048),
  'cifar10_small': (4, 192, 8, 3, 384),
  'fashion_mnist': (4, 96, 6, 3, 192),
  'digits': (2, 64, 4, 4, 128),
}

RENAMED_PRESETS = {
  'cifar10': "use 'cifar10_small' (the same 192-wide model) or 'cls_paper_cifar10' (seed 002's "
  'own, 512 wide, 8 heads, MLP 2048).',
}


def make_vit_config(
  variant: str,
  *,
  num_classes: int,
  image_size: int,
  num_channels: int,
  patch_size: int = 0,
  hidden_size: int = 0,
  num_layers: int = 0,
  num_heads: int = 0,
  mlp_dim: int = 0,
  dropout_rate: float = 0.0,
  drop_path_rate: float = 0.0,
  dtype: str = 'float32',
) -> ViTConfig:
  """A preset of `PRESETS` with its geometry overridden where an override is non-zero.

  Args:
    variant: a name of `PRESETS` ('digits', 'deit_small', 'B/16', ...).
    num_classes: width of the classification head.
    image_size: side in pixels of the square input image.
    num_channels: channels of the input image.
    patch_size, hidden_size, num_layers, num_heads, mlp_dim: 0 = the preset's value.
    dropout_rate: dropout after attention, in the MLP and on the embeddings, in [0, 1).
    drop_path_rate: stochastic depth of the last block, in [0, 1) (linear from 0 at block 0).
    dtype: compute dtype, 'float32' or 'bfloat16' (params stay float32).

  Returns:
    The ViTConfig. A bad variant, geometry or dtype is a one-line `UserError` naming the fix.
  """
  if variant in RENAMED_PRESETS:
    raise UserError(f'model.variant {variant!r} was renamed: {RENAMED_PRESETS[variant]}')
  if variant not in PRESETS:
    raise UserError(f'Unknown model variant {variant!r}; choose one of: {", ".join(PRESETS)}.')
  overrides = dict(
    patch_size=patch_size,
    hidden_size=hidden_size,
    num_layers=num_layers,
    num_heads=num_heads,
    mlp_dim=mlp_dim,
  )
  for name, value in overrides.items():
    if not isinstance(value, int) or value < 0:
      raise UserError(f"model.{name} must be an integer >= 0 (0 = the preset's), got {value!r}.")
  for name, value in dict(
    num_classes=num_classes, image_size=image_size, num_channels=num_channels
  ).items():
    if not isinstance(value, int) or value < 1:
      raise UserError(f'The model needs {name} >= 1, got {value!r}.')
  if not 0.0 <= dropout_rate < 1.0:
    raise UserError(f'model.dropout_rate must be in [0, 1), got {dropout_rate!r}.')
  if not 0.0 <= drop_path_rate < 1.0:
    raise UserError(f'model.drop_path_rate must be in [0, 1), got {drop_path_rate!r}.')
  if dtype not in DTYPES:
    raise UserError(f'Unknown model dtype {dtype!r}; use float32 or bfloat16.')
  preset = dict(zip(overrides, PRESETS[variant]))
  vit_cfg = ViTConfig(
    num_classes=num_classes,
    image_size=image_size,
    num_channels=num_channels,
    dropout_rate=dropout_rate,
    drop_path_rate=drop_path_rate,
    dtype=dtype,
    **{name: value or preset[name] for name, value in overrides.items()},
  )
  if vit_cfg.image_size % vit_cfg.patch_size:
    raise UserError(
      f'image_size {vit_cfg.image_size} is not a multiple of patch_size '
      f'{vit_cfg.patch_size}; change --config.data.image_size or '
      '--config.model.patch_size.'
    )
  if vit_cfg.hidden_size % vit_cfg.num_heads:
    raise UserError(
      f'hidden_size {vit_cfg.hidden_size} is not divisible by num_heads '
      f'{vit_cfg.num_heads}; change --config.model.hidden_size or num_heads.'
    )
  return vit_cfg


class TokenStats(NamedTuple):
  """Per-token importance statistics of one block, fp32, (B, N) each (index 0 is CLS).

  A statistic the forward was not asked for (`statistics=`) is None.
  """

  cls_attention: Optional[Array] = None  # Attention CLS pays to each token, mean over heads.
  # Mean attention each token receives from the other kept patch tokens.
  mean_attention: Optional[Array] = None
  # CLS attention times the norm of the token's value, a_j * ||v_j||, per head, mean over heads:
  # how much token j actually moves CLS's attention output.
  cls_value_attention: Optional[Array] = None


# Every statistic a block can compute. Only `mean_attention` needs the full (B, H, N, N) map; the
# others come from the CLS query row, so a forward that asks for none of it runs fused attention.
STATISTICS = TokenStats._fields
NEEDS_FULL_MAP = ('mean_attention',)


class ModelAux(NamedTuple):
  stats: tuple[TokenStats, ...]  # One entry per block, computed on the tokens that block saw.
  # Per block: tokens (CLS included) still kept after it and its selector, (B,).
  kept: tuple[Array, ...]
  keep_mask: Array  # Final keep mask (B, N_last).
  # The final tokens after the encoder norm (B, N_last, D): what distillation compares with a
  # teacher's (unused outputs cost nothing under jit).
  tokens: Optional[Array] = None


def _check_statistics(statistics: tuple[str, ...]) -> None:
  unknown = [name for name in statistics if name not in STATISTICS]
  if unknown:
    raise ValueError(f'unknown statistic {unknown[0]!r}; the model computes {STATISTICS}')


def cls_statistics(cls_probs: Array, values: Optional[Array] = None) -> TokenStats:
  """The statistics of the CLS query row `cls_probs` (B, H, N); `values` (B, N, H, head_dim)
  adds `cls_value_attention`."""
  cls_probs = cls_probs.astype(jnp.float32)
  value_weighted = None
  if values is not None:
    norms = jnp.linalg.norm(values.astype(jnp.float32), axis=-1)  # (B, N, H)
    value_weighted = jnp.mean(cls_probs * jnp.swapaxes(norms, 1, 2), axis=1)
  return TokenStats(cls_attention=cls_probs.mean(axis=1), cls_value_attention=value_weighted)


def token_statistics(probs: Array, keep_mask: Array, values: Optional[Array] = None) -> TokenStats:
  """Reduces attention probabilities (B, H, N, N) to the per-token scores pruners rank by.

  `values` (B, N, H, head_dim), if given, adds `cls_value_attention`.
  """
  # Row 0 first, then the head mean: averaging the whole (B, N, N) map for one row cost ~1 % of a
  # pruned DeiT-S forward (benchmarks/pruning_speed.py).
  row = cls_statistics(probs[:, :, 0, :], values)
  p = probs.astype(jnp.float32).mean(axis=1)  # (B, N, N): queries x keys.
  n = p.shape[-1]
  # Queries that count: kept patch tokens (not CLS), never a token attending to itself.
  q_valid = keep_mask.astype(jnp.float32).at[:, 0].set(0.0)
  off_diag = 1.0 - jnp.eye(n, dtype=jnp.float32)
  weights = q_valid[:, :, None] * off_diag[None]
  received = jnp.sum(p * weights, axis=1)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return row._replace(mean_attention=received / count)


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  gelu_approximate: bool = False

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    d = x.shape[-1]
    dense = lambda features: nn.Dense(
      features,
      dtype=self.dtype,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.normal(stddev=1e-6),
    )
    x = dense(self.mlp_dim)(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = dense(d)(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class MaskedSelfAttention(nn.Module):
  """Multi-head self-attention that ignores dropped keys and returns the statistics asked for.

  Same parameter layout as `flax.linen.MultiHeadDotProductAttention` (query/key/value/out). Two
  paths with the same output (to 1e-6 in fp32): when no statistic needs the full attention map,
  `jax.nn.dot_product_attention` (fused; cuDNN where the backend has it) with the CLS row, (B, H,
  1, N), recomputed for the statistics; otherwise the explicit softmax, whose map is reduced.
  Logits and softmax are fp32 in both, whatever the compute dtype.
  """

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self,
    x: Array,
    keep_mask: Array,
    size: Optional[Array] = None,
    *,
    statistics: tuple[str, ...] = STATISTICS,
  ) -> tuple[Array, TokenStats, Array]:
    """(output (B, N, D), TokenStats of `statistics`, keys averaged over heads (B, N, hd)).

    `size` (B, N): proportional attention, log(size) added to the logits of each key (ToMe).
    """
    _check_statistics(statistics)
    d = x.shape[-1]
    head_dim = d // self.num_heads
    dense = lambda name: nn.DenseGeneral(
      (self.num_heads, head_dim),
      dtype=self.dtype,
      name=name,
      kernel_init=nn.initializers.xavier_uniform(),
    )
    q, k, v = dense('query')(x), dense('key')(x), dense('value')(x)
    bias = None if size is None else jnp.log(size.astype(jnp.float32))[:, None, None, :]
    kept = keep_mask[:, None, None, :] > 0  # (B, 1, 1, N): which keys count.
    values = v if 'cls_value_attention' in statistics else None
    if any(name in NEEDS_FULL_MAP for name in statistics):
      probs = _attention_probs(q, k, bias, kept)
      out = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(self.dtype), v)
      stats = token_statistics(probs, keep_mask, values)
    else:
      out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=kept)
      stats = TokenStats()
      if statistics:
        stats = cls_statistics(_attention_probs(q[:, :1], k, bias, kept)[:, :, 0], values)
    stats = TokenStats(
      **{name: getattr(stats, name) if name in statistics else None for name in STATISTICS}
    )
    out = nn.DenseGeneral(
      d, axis=(-2, -1), dtype=self.dtype, name='out', kernel_init=nn.initializers.xavier_uniform()
    )(out)
    return out, stats, jnp.mean(k.astype(jnp.float32), axis=2)


def _attention_probs(q: Array, k: Array, bias: Optional[Array], kept: Array) -> Array:
  """Softmax attention of queries q (B, T, H, hd) over keys k (B, N, H, hd): (B, H, T, N), fp32."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32)
  logits = logits / jnp.sqrt(q.shape[-1]).astype(jnp.float32)
  if bias is not None:
    logits = logits + bias
  return jax.nn.softmax(jnp.where(kept, logits, _MASK_BIAS), axis=-1)


class EncoderBlock(nn.Module):
  """Pre-LayerNorm block; a dropped token (mask 0) keeps its state unchanged.

  Two halves, `attend` (attention and its residual) and `feed_forward` (MLP and its residual), so
  token merging can run between them; `__call__` is both.
  """

  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = False
  drop_path_rate: float = 0.0  # This block's stochastic depth (`drop_path`).

  def setup(self):
    norm = lambda name: nn.LayerNorm(dtype=self.dtype, epsilon=self.layer_norm_epsilon, name=name)
    self.LayerNorm_0 = norm('LayerNorm_0')
    self.MultiHeadDotProductAttention_1 = MaskedSelfAttention(self.num_heads, dtype=self.dtype)
    self.LayerNorm_2 = norm('LayerNorm_2')
    self.MlpBlock_3 = MlpBlock(
      self.mlp_dim, self.dropout_rate, dtype=self.dtype, gelu_approximate=self.gelu_approximate
    )
    self.dropout = nn.Dropout(self.dropout_rate, name='Dropout_0')  # The compact module's name.

  def attend(
    self,
    x: Array,
    keep_mask: Array,
    *,
    deterministic: bool,
    size: Optional[Array] = None,
    statistics: tuple[str, ...] = STATISTICS,
  ) -> tuple[Array, TokenStats, Array]:
    """x + attention: (tokens, TokenStats of `statistics`, keys averaged over heads)."""
    y, stats, metric = self.MultiHeadDotProductAttention_1(
      self.LayerNorm_0(x), keep_mask, size, statistics=statistics
    )
    y = self.dropout(y, deterministic=deterministic)
    y = self.drop_path(y, deterministic=deterministic)
    return x + keep_mask[..., None].astype(x.dtype) * y, stats, metric

  def feed_forward(self, x: Array, keep_mask: Array, *, deterministic: bool) -> Array:
    y = self.MlpBlock_3(self.LayerNorm_2(x), deterministic=deterministic)
    y = self.drop_path(y, deterministic=deterministic)
    return x + keep_mask[..., None].astype(x.dtype) * y

  def drop_path(self, y: Array, *, deterministic: bool) -> Array:
    """A residual branch (B, N, D), zeroed for each example with probability `drop_path_rate`
    and scaled by 1 / (1 - rate) otherwise (timm's DropPath); the identity in evaluation."""
    if deterministic or self.drop_path_rate == 0.0:
      return y
    return drop_path(y, self.drop_path_rate, self.make_rng('dropout'))

  def __call__(
    self,
    x: Array,
    keep_mask: Array,
    *,
    deterministic: bool,
    statistics: tuple[str, ...] = STATISTICS,
  ) -> tuple[Array, TokenStats]:
    x, stats, _ = self.attend(x, keep_mask, deterministic=deterministic, statistics=statistics)
    return self.feed_forward(x, keep_mask, deterministic=deterministic), stats


def drop_path(y: Array, rate: float, key: Array) -> Array:
  """Stochastic depth on a batch of residual branches y (B, ...): example b is kept (and scaled by
  1 / (1 - rate)) when a uniform draw for it is >= rate, else zeroed."""
  keep = jax.random.uniform(key, (y.shape[0],) + (1,) * (y.ndim - 1)) >= rate
  return jnp.where(keep, y / (1.0 - rate), jnp.zeros_like(y)).astype(y.dtype)


class PositionEmbedding(nn.Module):
  """The learned (1, N, D) position embedding (`posembed_input/pos_embedding`)."""

  num_tokens: int
  hidden_size: int

  def setup(self):
    self.pos_embedding = self.param(
      'pos_embedding', nn.initializers.normal(stddev=0.02), (1, self.num_tokens, self.hidden_size)
    )

  def __call__(self) -> Array:
    return self.pos_embedding


class Encoder(nn.Module):
  """The `Transformer` scope: position embedding, blocks `encoderblock_{i}`, final norm."""

  config: ViTConfig

  def setup(self):
    c = self.config
    dtype = jnp.dtype(c.dtype)
    self.posembed_input = PositionEmbedding(c.num_tokens, c.hidden_size)
    # Named as the compact module of earlier versions named it, so dropout draws the same masks.
    self.dropout = nn.Dropout(c.dropout_rate, name='Dropout_0')
    for i in range(c.num_layers):
      block = EncoderBlock(
        c.num_heads,
        c.mlp_dim,
        c.dropout_rate,
        dtype=dtype,
        layer_norm_epsilon=c.layer_norm_epsilon,
        gelu_approximate=c.gelu_approximate,
        drop_path_rate=c.drop_path_rate * i / max(c.num_layers - 1, 1),
      )
      setattr(self, f'encoderblock_{i}', block)
    self.encoder_norm = nn.LayerNorm(dtype=dtype, epsilon=c.layer_norm_epsilon)

  def add_positions(self, x: Array, *, train: bool) -> Array:
    x = x + self.posembed_input().astype(x.dtype)
    return self.dropout(x, deterministic=not train)

  def block(
    self, layer: int, x: Array, keep_mask: Array, *, train: bool, statistics: tuple[str, ...]
  ) -> tuple[Array, TokenStats]:
    return getattr(self, f'encoderblock_{layer}')(
      x, keep_mask, deterministic=not train, statistics=statistics
    )

  def attend(
    self,
    layer: int,
    x: Array,
    keep_mask: Array,
    size: Optional[Array],
    *,
    train: bool,
    statistics: tuple[str, ...],
  ):
    return getattr(self, f'encoderblock_{layer}').attend(
      x, keep_mask, deterministic=not train, size=size, statistics=statistics
    )

  def feed_forward(self, layer: int, x: Array, keep_mask: Array, *, train: bool) -> Array:
    return getattr(self, f'encoderblock_{layer}').feed_forward(
      x, keep_mask, deterministic=not train
    )

  def norm(self, x: Array) -> Array:
    return self.encoder_norm(x)


class VisionTransformer(nn.Module):
  """ViT classifier on the CLS token; `__call__` returns (logits (B, classes) fp32, ModelAux)."""

  config: ViTConfig

  def setup(self):
    c = self.config
    p = c.patch_size
    self.embedding = nn.Conv(
      c.hidden_size, (p, p), strides=(p, p), padding='VALID', dtype=jnp.dtype(c.dtype)
    )
    self.cls = self.param('cls', nn.initializers.zeros, (1, 1, c.hidden_size))
    self.Transformer = Encoder(c)  # Capitalised: the scope name checkpoints use.
    self.head = nn.Dense(c.num_classes, kernel_init=nn.initializers.zeros)

  def embed(self, images: Array, *, train: bool = False) -> Array:
    """Patch embedding, CLS token, position embedding and dropout: the tokens (B, N, D) of block 0.

    `images` is (B, image_size, image_size, num_channels); another shape is a ValueError.
    """
    c = self.config
    dtype = jnp.dtype(c.dtype)
    if images.shape[1:] != (c.image_size, c.image_size, c.num_channels):
      raise ValueError(
        f'Model expects images of shape (B, {c.image_size}, {c.image_size}, '
        f'{c.num_channels}), got {images.shape}; set --config.data.image_size to '
        'match the model.'
      )
    x = self.embedding(images.astype(dtype))
    b = x.shape[0]
    x = x.reshape(b, -1, c.hidden_size)
    cls = jnp.broadcast_to(self.cls.astype(dtype), (b, 1, c.hidden_size))
    x = jnp.concatenate([cls, x], axis=1)
    return self.Transformer.add_positions(x, train=train)

  def block(
    self,
    layer: int,
    x: Array,
    keep_mask: Array,
    *,
    train: bool = False,
    statistics: tuple[str, ...] = STATISTICS,
  ) -> tuple[Array, TokenStats]:
    """Encoder block `layer` (a Python int) on tokens x (B, N, D) with keep mask (B, N).

    Returns the new tokens (B, N, D) and the block's TokenStats (those in `statistics`).
    """
    if not 0 <= layer < self.config.num_layers:
      raise ValueError(f'layer {layer} out of range: the model has {self.config.num_layers}.')
    return self.Transformer.block(layer, x, keep_mask, train=train, statistics=statistics)

  def merging_block(
    self,
    layer: int,
    x: Array,
    keep_mask: Array,
    size: Array,
    *,
    statistics: tuple[str, ...] = STATISTICS,
  ) -> tuple[Array, TokenStats, Array]:
    """Block `layer` with proportional attention to tokens of `size` (B, N) patches (what a
    token merger runs): the tokens, the TokenStats and the metric (keys averaged over heads)."""
    x, stats, metric = self.Transformer.attend(
      layer, x, keep_mask, size, train=False, statistics=statistics
    )
    return self.Transformer.feed_forward(layer, x, keep_mask, train=False), stats, metric

  def readout(self, x: Array) -> Array:
    """Final LayerNorm and the classification head on CLS: logits (B, classes) fp32."""
    return self.head(self.Transformer.norm(x)[:, 0]).astype(jnp.float32)

  def __call__(
    self,
    images: Array,
    *,
    keep_mask: Optional[Array] = None,
    train: bool = False,
    token_selector: Optional[TokenSelector] = None,
    token_merger: Optional[TokenMerger] = None,
    statistics: tuple[str, ...] = STATISTICS,
  ) -> tuple[Array, ModelAux]:
    """Logits (B, classes) fp32 and the per-block statistics and kept counts.

    Args:
      images: (B, image_size, image_size, num_channels).
      keep_mask: (B, N) initial keep mask (1 = kept); None = every token.
      train: enables dropout (needs a 'dropout' rng).
      token_selector: called after each block to change the tokens and mask (pruning).
      token_merger: merges tokens between the attention and the MLP of every block (ToMe,
        EViT), or after it (`after_block`), carrying per-token sizes (all ones at the start:
        the plain ViT).
      statistics: the `TokenStats` fields to compute in every block (the rest are None); without
        `mean_attention`, attention runs fused (`MaskedSelfAttention`). `pruning.model_hooks`
        asks for what its pruner reads.

    Returns:
      (logits, ModelAux).
    """
    x = self.embed(images, train=train)
    if keep_mask is None:
      keep_mask = jnp.ones(x.shape[:2], jnp.float32)
    stats, kept = [], []
    size = jnp.ones(x.shape[:2], jnp.float32) if token_merger is not None else None
    for i in range(self.config.num_layers):
      if token_merger is None:
        x, layer_stats = self.block(i, x, keep_mask, train=train, statistics=statistics)
      else:
        prop = size if token_merger.proportional_attention else None
        x, layer_stats, metric = self.Transformer.attend(
          i, x, keep_mask, prop, train=train, statistics=statistics
        )
        if not token_merger.after_block:
          x, keep_mask, size = token_merger.merge(i, x, keep_mask, size, metric, layer_stats)
        x = self.Transformer.feed_forward(i, x, keep_mask, train=train)
        if token_merger.after_block:
          x, keep_mask, size = token_merger.merge(i, x, keep_mask, size, metric, layer_stats)
      stats.append(layer_stats)
      if token_selector is not None:
        x, keep_mask = token_selector(i, x, keep_mask, layer_stats)
      kept.append(jnp.sum(keep_mask > 0, axis=-1))
    x = self.Transformer.norm(x)
    aux = ModelAux(stats=tuple(stats), kept=tuple(kept), keep_mask=keep_mask, tokens=x)
    return self.head(x[:, 0]).astype(jnp.float32), aux


def create_model(vit_cfg: ViTConfig) -> VisionTransformer:
  return VisionTransformer(vit_cfg)
