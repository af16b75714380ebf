"""Vision Transformer (ViT/DeiT) whose forward pass already carries what token pruning needs.

Every block returns its attention probabilities, from which the encoder derives two per-token statistics
(CLS attention and mean received attention) without a second pass. A keep mask (B, N) travels through the
blocks: a dropped token is no longer a key for anyone and its own state is frozen, so an all-ones mask is the
plain ViT. A `token_selector` callback runs after each block; pruning methods use it to change the mask (mask
mode) or to gather the kept tokens into fewer slots (compact mode). Layers are a Python loop rather than
`nn.scan` because compact mode changes the token count between blocks.

Parameter names follow google-research/vision_transformer (`Transformer/encoderblock_0/...`), so official
checkpoints map onto them one to one.
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Array = jax.Array
# (layer index, tokens (B, N, D), keep mask (B, N), statistics of that layer) -> (tokens, keep mask).
TokenSelector = Callable[[int, Array, Array, 'TokenStats'], tuple[Array, Array]]

_MASK_BIAS = -1e9  # Added to attention logits of dropped keys (in fp32).


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
  dtype: str = 'float32'
  # Numerics of imported checkpoints (models/pretrained.py): HF ViT/DeiT use LayerNorm epsilon 1e-12, and the JAX
  # vision_transformer/big_vision checkpoints were trained with tanh-approximated GELU.
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = False

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @property
  def num_tokens(self) -> int:
    return self.num_patches + 1


# name: (patch_size, hidden_size, num_layers, num_heads, mlp_dim). ViT and DeiT share geometry (timm naming);
# the small presets are for the offline datasets and seed 002's CIFAR-10 model (8 layers, 144 patches + CLS).
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
    'cifar10': (4, 192, 8, 3, 384),
    'fashion_mnist': (4, 96, 6, 3, 192),
    'digits': (2, 64, 4, 4, 128),
}


def vit_config_from(config: ml_collections.ConfigDict, num_classes: int, num_channels: int) -> ViTConfig:
  """Resolves `config.model` (preset + non-zero overrides) and the image size into a ViTConfig."""
  from vitprune_jax.errors import UserError  # Local import keeps the model importable on its own.
  m = config.model
  if m.variant not in PRESETS:
    raise UserError(f'Unknown model variant {m.variant!r}; choose one of: {", ".join(PRESETS)}.')
  patch, hidden, layers, heads, mlp = PRESETS[m.variant]
  vc = ViTConfig(
      num_classes=num_classes,
      image_size=config.dataset.image_size,
      patch_size=m.patch_size or patch,
      hidden_size=m.hidden_size or hidden,
      num_layers=m.num_layers or layers,
      num_heads=m.num_heads or heads,
      mlp_dim=m.mlp_dim or mlp,
      num_channels=num_channels,
      dropout_rate=m.dropout_rate,
      dtype=m.dtype)
  if vc.image_size % vc.patch_size:
    raise UserError(f'image_size {vc.image_size} is not a multiple of patch_size {vc.patch_size}; '
                    'change --config.dataset.image_size or --config.model.patch_size.')
  if vc.hidden_size % vc.num_heads:
    raise UserError(f'hidden_size {vc.hidden_size} is not divisible by num_heads {vc.num_heads}.')
  if vc.dtype not in ('float32', 'bfloat16'):
    raise UserError(f'Unknown model dtype {vc.dtype!r}; use float32 or bfloat16.')
  return vc


class TokenStats(NamedTuple):
  """Per-token importance statistics of one block, fp32, shape (B, N) each (index 0 is CLS)."""
  cls_attention: Array  # Attention CLS pays to each token, averaged over heads.
  mean_attention: Array  # Mean attention each token receives from the other kept patch tokens.


class ModelAux(NamedTuple):
  stats: tuple[TokenStats, ...]  # One entry per block, computed on the tokens that block saw.
  kept: tuple[Array, ...]  # Per block: tokens (CLS included) still kept after it and its selector, (B,).
  keep_mask: Array  # Final keep mask (B, N_last).


def token_statistics(probs: Array, keep_mask: Array) -> TokenStats:
  """Reduces attention probabilities (B, H, N, N) to the per-token scores pruners rank by."""
  # Row 0 first, then the head mean: averaging the whole (B, N, N) map for one row cost ~1 % of a pruned DeiT-S
  # forward (benchmarks/pruning_speed.py). mean_attention needs the full map; XLA drops it when unused.
  cls_attention = probs[:, :, 0, :].astype(jnp.float32).mean(axis=1)
  p = probs.astype(jnp.float32).mean(axis=1)  # (B, N, N): queries x keys.
  n = p.shape[-1]
  # Queries that count: kept patch tokens (not CLS), never a token attending to itself.
  q_valid = keep_mask.astype(jnp.float32).at[:, 0].set(0.0)
  off_diag = 1.0 - jnp.eye(n, dtype=jnp.float32)
  weights = q_valid[:, :, None] * off_diag[None]
  received = jnp.sum(p * weights, axis=1)
  count = jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return TokenStats(cls_attention=cls_attention, mean_attention=received / count)


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  gelu_approximate: bool = False

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    d = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))(x)
    x = nn.gelu(x, approximate=self.gelu_approximate)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    x = nn.Dense(d, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class MaskedSelfAttention(nn.Module):
  """Multi-head self-attention that ignores dropped keys and returns its probabilities.

  Same parameter layout as `flax.linen.MultiHeadDotProductAttention` (query/key/value/out).
  """
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, keep_mask: Array) -> tuple[Array, Array]:
    d = x.shape[-1]
    head_dim = d // self.num_heads
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype, name=name,
                                         kernel_init=nn.initializers.xavier_uniform())
    q, k, v = dense('query')(x), dense('key')(x), dense('value')(x)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k, preferred_element_type=jnp.float32) / jnp.sqrt(head_dim)
    logits = jnp.where(keep_mask[:, None, None, :] > 0, logits, _MASK_BIAS)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum('bhqk,bkhd->bqhd', probs.astype(self.dtype), v)
    out = nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, name='out',
                          kernel_init=nn.initializers.xavier_uniform())(out)
    return out, probs


class EncoderBlock(nn.Module):
  """Pre-LayerNorm block; a dropped token (mask 0) keeps its state unchanged."""
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  layer_norm_epsilon: float = 1e-6
  gelu_approximate: bool = False

  @nn.compact
  def __call__(self, x: Array, keep_mask: Array, *, deterministic: bool) -> tuple[Array, Array]:
    update = keep_mask[..., None].astype(x.dtype)
    y = nn.LayerNorm(dtype=self.dtype, epsilon=self.layer_norm_epsilon, name='LayerNorm_0')(x)
    y, probs = MaskedSelfAttention(self.num_heads, dtype=self.dtype, name='MultiHeadDotProductAttention_1')(
        y, keep_mask)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    x = x + update * y
    y = nn.LayerNorm(dtype=self.dtype, epsilon=self.layer_norm_epsilon, name='LayerNorm_2')(x)
    y = MlpBlock(self.mlp_dim, self.dropout_rate, dtype=self.dtype, gelu_approximate=self.gelu_approximate,
                 name='MlpBlock_3')(y, deterministic=deterministic)
    return x + update * y, probs


class VisionTransformer(nn.Module):
  """ViT classifier on the CLS token. Returns (logits (B, classes) fp32, ModelAux)."""
  config: ViTConfig

  @nn.compact
  def __call__(self, images: Array, *, keep_mask: Optional[Array] = None, train: bool = False,
               token_selector: Optional[TokenSelector] = None) -> tuple[Array, ModelAux]:
    c = self.config
    dtype = jnp.dtype(c.dtype)
    if images.shape[1:] != (c.image_size, c.image_size, c.num_channels):
      raise ValueError(f'Model expects images of shape (B, {c.image_size}, {c.image_size}, {c.num_channels}), '
                       f'got {images.shape}; set --config.dataset.image_size to match the model.')
    x = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=(c.patch_size, c.patch_size),
                padding='VALID', dtype=dtype, name='embedding')(images.astype(dtype))
    b = x.shape[0]
    x = x.reshape(b, -1, c.hidden_size)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, c.hidden_size))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b, 1, c.hidden_size)), x], axis=1)
    if keep_mask is None:
      keep_mask = jnp.ones((b, c.num_tokens), jnp.float32)
    x, aux = Encoder(c, dtype, name='Transformer')(x, keep_mask, train=train,
                                                             token_selector=token_selector)
    logits = nn.Dense(c.num_classes, kernel_init=nn.initializers.zeros, name='head')(x[:, 0])
    return logits.astype(jnp.float32), aux


class Encoder(nn.Module):
  """`Transformer` scope: position embedding (under `posembed_input`), blocks, final norm."""
  config: ViTConfig
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, keep_mask: Array, *, train: bool,
               token_selector: Optional[TokenSelector]) -> tuple[Array, ModelAux]:
    c = self.config
    x = x + _PosEmbed(name='posembed_input')(x).astype(x.dtype)
    x = nn.Dropout(c.dropout_rate)(x, deterministic=not train)
    stats, kept = [], []
    for i in range(c.num_layers):
      x, probs = EncoderBlock(c.num_heads, c.mlp_dim, c.dropout_rate, dtype=self.dtype,
                              layer_norm_epsilon=c.layer_norm_epsilon, gelu_approximate=c.gelu_approximate,
                              name=f'encoderblock_{i}')(x, keep_mask, deterministic=not train)
      layer_stats = token_statistics(probs, keep_mask)
      stats.append(layer_stats)
      if token_selector is not None:
        x, keep_mask = token_selector(i, x, keep_mask, layer_stats)
      kept.append(jnp.sum(keep_mask > 0, axis=-1))
    x = nn.LayerNorm(dtype=self.dtype, epsilon=c.layer_norm_epsilon, name='encoder_norm')(x)
    return x, ModelAux(stats=tuple(stats), kept=tuple(kept), keep_mask=keep_mask)


class _PosEmbed(nn.Module):
  @nn.compact
  def __call__(self, x):
    return self.param('pos_embedding', nn.initializers.normal(stddev=0.02), (1,) + x.shape[1:])


def create_model(vit_config: ViTConfig) -> VisionTransformer:
  return VisionTransformer(vit_config)


# Stage-by-stage inference with the same parameters, for code that must stop between blocks (the RL
# environment runs one pruning point per step). `test_vit.py` checks that the stages compose to `__call__`.


def embed(cfg: ViTConfig, params: Any, images: Array) -> Array:
  """Patch embedding, CLS token and position embedding: the tokens block 0 sees, (B, N, D)."""
  dtype = jnp.dtype(cfg.dtype)
  x = nn.Conv(cfg.hidden_size, (cfg.patch_size, cfg.patch_size), strides=(cfg.patch_size, cfg.patch_size),
              padding='VALID', dtype=dtype).apply({'params': params['embedding']}, images.astype(dtype))
  x = x.reshape(x.shape[0], -1, cfg.hidden_size)
  cls = jnp.broadcast_to(params['cls'].astype(dtype), (x.shape[0], 1, cfg.hidden_size))
  x = jnp.concatenate([cls, x], axis=1)
  return x + params['Transformer']['posembed_input']['pos_embedding'].astype(dtype)


def apply_block(cfg: ViTConfig, params: Any, layer: int, x: Array, keep_mask: Array) -> tuple[Array, Array]:
  """Block `layer` in inference mode: (tokens, attention probabilities (B, H, N, N))."""
  block = EncoderBlock(cfg.num_heads, cfg.mlp_dim, 0.0, dtype=jnp.dtype(cfg.dtype),
                       layer_norm_epsilon=cfg.layer_norm_epsilon, gelu_approximate=cfg.gelu_approximate)
  return block.apply({'params': params['Transformer'][f'encoderblock_{layer}']}, x, keep_mask, deterministic=True)


def readout(cfg: ViTConfig, params: Any, x: Array) -> Array:
  """Final LayerNorm and the classification head on CLS: logits (B, classes) fp32."""
  dtype = jnp.dtype(cfg.dtype)
  x = nn.LayerNorm(dtype=dtype, epsilon=cfg.layer_norm_epsilon).apply(
      {'params': params['Transformer']['encoder_norm']}, x)
  return nn.Dense(cfg.num_classes).apply({'params': params['head']}, x[:, 0]).astype(jnp.float32)
