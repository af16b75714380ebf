"""Pretrained weights from other code bases, converted into this project's Flax ViT params.

Sources, told apart by file extension and then by parameter names:
- `.npz` from google-research/vision_transformer (ViT, AugReg): our model uses the same names, so
  only prefixes (`opt/target/`) are stripped. big_vision `.npz` (`params/`, `params/img/`): linen
  block numbering (`MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`), scanned blocks
  (`encoderblock/`, stacked on a leading axis) and a position embedding that the CLS token never
  gets (CLS then gets a zero row: equivalent).
- PyTorch `state_dict` files (`.bin`/`.pt`/`.pth`) and `.safetensors` from HF `transformers`
  ViT/DeiT (v4 names as `save_pretrained` writes them, and v5 module names) or timm ViT/DeiT (fused
  qkv). Linear weights are (out, in), convolutions OIHW: both are transposed, and attention
  projections split into (heads, head_dim).

The source's numerics travel with the weights: the JAX checkpoints were trained with
tanh-approximated GELU and HF ViT/DeiT use LayerNorm epsilon 1e-12 (from `config.json`), so the
imported model uses them too (`ViTConfig`). `fit_to_model` then adapts the result to the target
model: the position-embedding grid is resized when the image size differs, the head is
zero-initialised when the class count differs (as vision_transformer does for fine-tuning), and
anything that still differs is a `CheckpointError` naming the first mismatched parameter.
`load_pretrained` does all of it for one file. The `mode=import_weights` job that saves the result
as a checkpoint is `vitprune_jax/jobs/import_weights.py`. torch and safetensors are imported only
when such a file is read.
"""

import dataclasses
import json
import math
import os
import pickle
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from vitprune_jax import checkpoints
from vitprune_jax.checkpoints import CheckpointError
from vitprune_jax.errors import UserError
from vitprune_jax.models import vit

FORMATS = ('auto', 'npz', 'torch', 'safetensors')
HEAD_MODES = ('auto', 'keep', 'reset')
RESIZE_METHODS = ('bilinear', 'bicubic', 'nearest', 'lanczos3')
_EXTENSIONS = {
  '.npz': 'npz',
  '.bin': 'torch',
  '.pt': 'torch',
  '.pth': 'torch',
  '.safetensors': 'safetensors',
}

POS = 'Transformer/posembed_input/pos_embedding'
_BLOCK = 'Transformer/encoderblock_{}/'
# Our ViT and the vision_transformer npz number a block's submodules pre-linen style; big_vision
# uses linen's.
_LINEN_BLOCK_NAMES = {
  'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
  'LayerNorm_1': 'LayerNorm_2',
  'MlpBlock_0': 'MlpBlock_3',
}

# PyTorch names -> (our module path, layout). Patterns match the name up to `.weight`/`.bias`; the
# layer index is group 1. HF: v4 names (`encoder.layer.N.attention.attention.query`, what
# `save_pretrained` writes) and v5 module names (`layers.N.attention.q_proj`), after the
# `vit.`/`deit.` prefix is removed.
_HF_LAYER = r'(?:encoder\.layer|layers)\.(\d+)\.'
_HF_MODULES = (
  (r'embeddings\.patch_embeddings\.projection', 'embedding', 'conv'),
  (
    _HF_LAYER + r'attention\.(?:attention\.query|q_proj)',
    _BLOCK + 'MultiHeadDotProductAttention_1/query',
    'qkv',
  ),
  (
    _HF_LAYER + r'attention\.(?:attention\.key|k_proj)',
    _BLOCK + 'MultiHeadDotProductAttention_1/key',
    'qkv',
  ),
  (
    _HF_LAYER + r'attention\.(?:attention\.value|v_proj)',
    _BLOCK + 'MultiHeadDotProductAttention_1/value',
    'qkv',
  ),
  (
    _HF_LAYER + r'attention\.(?:output\.dense|o_proj)',
    _BLOCK + 'MultiHeadDotProductAttention_1/out',
    'out',
  ),
  (_HF_LAYER + r'(?:intermediate\.dense|mlp\.fc1)', _BLOCK + 'MlpBlock_3/Dense_0', 'dense'),
  (_HF_LAYER + r'(?:output\.dense|mlp\.fc2)', _BLOCK + 'MlpBlock_3/Dense_1', 'dense'),
  (_HF_LAYER + r'layernorm_before', _BLOCK + 'LayerNorm_0', 'norm'),
  (_HF_LAYER + r'layernorm_after', _BLOCK + 'LayerNorm_2', 'norm'),
  (r'layernorm', 'Transformer/encoder_norm', 'norm'),
  (r'(?:classifier|cls_classifier)', 'head', 'dense'),
  (r'distillation_classifier', 'head_dist', 'dense'),
  (r'pooler\.dense', 'pooler', 'dense'),
)
_HF_PARAMS = {
  'embeddings.cls_token': 'cls',
  'embeddings.position_embeddings': POS,
  'embeddings.distillation_token': 'dist_token',
}
_TIMM_MODULES = (
  (r'patch_embed\.proj', 'embedding', 'conv'),
  (r'blocks\.(\d+)\.attn\.qkv', _BLOCK + 'MultiHeadDotProductAttention_1/{}', 'fused_qkv'),
  (r'blocks\.(\d+)\.attn\.proj', _BLOCK + 'MultiHeadDotProductAttention_1/out', 'out'),
  (r'blocks\.(\d+)\.mlp\.fc1', _BLOCK + 'MlpBlock_3/Dense_0', 'dense'),
  (r'blocks\.(\d+)\.mlp\.fc2', _BLOCK + 'MlpBlock_3/Dense_1', 'dense'),
  (r'blocks\.(\d+)\.norm1', _BLOCK + 'LayerNorm_0', 'norm'),
  (r'blocks\.(\d+)\.norm2', _BLOCK + 'LayerNorm_2', 'norm'),
  (r'norm', 'Transformer/encoder_norm', 'norm'),
  (r'head', 'head', 'dense'),
  (r'head_dist', 'head_dist', 'dense'),
)
_TIMM_PARAMS = {'cls_token': 'cls', 'pos_embed': POS, 'dist_token': 'dist_token'}
_IGNORED = re.compile(r'(^|\.)position_ids$')  # A non-parameter buffer in old HF checkpoints.
# HF `hidden_act` -> whether it is the tanh approximation (gelu_new and friends) rather than exact
# (erf) GELU.
_HF_GELU = {
  'gelu': False,
  'gelu_python': False,
  'gelu_new': True,
  'gelu_pytorch_tanh': True,
  'gelu_fast': True,
}

Flat = dict[str, np.ndarray]  # '/'-joined parameter path in our naming -> array.


@dataclasses.dataclass
class Source:
  """What was read, for logs and the checkpoint's metadata."""

  path: str
  format: str  # npz | torch | safetensors
  naming: str  # vision_transformer | big_vision | hf | timm
  layer_norm_epsilon: float = 1e-6  # The numerics the weights were trained with.
  gelu_approximate: bool = False
  notes: list[str] = dataclasses.field(default_factory=list)


def _note(source: Source, message: str) -> None:
  logging.info('Pretrained weights: %s', message)
  source.notes.append(message)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise UserError(f'Unknown pretrained.{key} {value!r}; choose one of: {", ".join(choices)}.')


def detect_format(path: str, fmt: str = 'auto') -> str:
  """The reader for `path`: `fmt` itself, or the one its extension implies when `fmt` is 'auto'."""
  _check_choice('format', fmt, FORMATS)
  if fmt != 'auto':
    return fmt
  ext = os.path.splitext(path)[1].lower()
  if ext not in _EXTENSIONS:
    raise UserError(
      f'Cannot tell the format of {path} from its extension {ext!r} (known: '
      f'{", ".join(_EXTENSIONS)}); set --config.pretrained.format=npz|torch|safetensors.'
    )
  return _EXTENSIONS[ext]


def read_file(path: str, fmt: str) -> Flat:
  """The raw arrays of a checkpoint file under their own names, as numpy (bf16/fp16 made fp32)."""
  if not epath.Path(path).is_file():
    raise UserError(
      f'Pretrained weights file {path} does not exist; check --config.pretrained.path.'
    )
  try:
    if fmt == 'npz':
      with epath.Path(path).open('rb') as f, np.load(f, allow_pickle=False) as npz:
        return {k: _float32(npz[k]) for k in npz.files}
    if fmt == 'safetensors':
      return _read_safetensors(path)
    return _read_torch(path)
  except (UserError, ImportError):
    raise
  except Exception as e:  # Every reader has its own exception types for damaged files.
    message = ' '.join(str(e).split())[:200]
    raise CheckpointError(
      f'Could not read {path} as {fmt} ({type(e).__name__}: {message}); check the file and '
      '--config.pretrained.format.'
    ) from e


def _float32(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  return x.astype(np.float32) if x.dtype.kind == 'f' or x.dtype.name == 'bfloat16' else x


def _read_safetensors(path: str) -> Flat:
  try:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(
      'Reading .safetensors needs the safetensors package: pip install safetensors '
      "(or pip install -e '.[import]')."
    ) from e
  try:
    return {k: _float32(v) for k, v in safetensors.numpy.load_file(path).items()}
  except TypeError:
    # numpy has no bfloat16 of its own; the flax reader returns ml_dtypes arrays instead.
    import safetensors.flax  # pylint: disable=g-import-not-at-top

    return {k: _float32(v) for k, v in safetensors.flax.load_file(path).items()}


def _read_torch(path: str) -> Flat:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError(
      'Reading a PyTorch state_dict needs torch (CPU build is enough): pip install torch==2.13.0 '
      "(or pip install -e '.[import]')."
    ) from e
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    raise CheckpointError(
      f'{path} holds Python objects besides tensors, which weights_only loading refuses; '
      "re-save just the state_dict, e.g. torch.save(checkpoint['model'], 'weights.pth')."
    ) from e
  # DeiT/timm training checkpoints wrap the state_dict.
  for key in ('model', 'state_dict', 'module'):
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
  if not isinstance(state, dict):
    raise CheckpointError(
      f'{path} holds a {type(state).__name__}, not a state_dict; save model.state_dict().'
    )
  return {
    k.removeprefix('module.'): _float32(
      v.detach().float().numpy() if v.is_floating_point() else v.numpy()
    )
    for k, v in state.items()
    if isinstance(v, torch.Tensor)
  }


def convert(raw: Flat, num_heads: int, source: Source) -> Flat:
  """Renames and re-lays out `raw` into our parameter paths; sets `source.naming`."""
  if any(k.endswith('embedding/kernel') for k in raw):
    return _from_npz(raw, source)
  names = [k for k in raw if not _IGNORED.search(k)]
  if 'patch_embed.proj.weight' in names:
    source.naming = 'timm'
    return _from_torch(raw, names, _TIMM_MODULES, _TIMM_PARAMS, num_heads, source)
  for name in names:
    if name.endswith('embeddings.patch_embeddings.projection.weight'):
      prefix = name[: -len('embeddings.patch_embeddings.projection.weight')]
      source.naming = 'hf'
      # The prefix is `vit.`, `deit.` or nothing (ViTModel).
      stripped = {k.removeprefix(prefix): v for k, v in raw.items()}
      return _from_torch(
        stripped,
        [k.removeprefix(prefix) for k in names],
        _HF_MODULES,
        _HF_PARAMS,
        num_heads,
        source,
      )
  raise CheckpointError(
    f'{source.path} does not look like a ViT checkpoint: no patch embedding among its '
    f'{len(raw)} arrays (first: {sorted(raw)[:3]}); expected vision_transformer/big_vision '
    '.npz names, HF `embeddings.patch_embeddings.projection.weight` or timm '
    '`patch_embed.proj.weight`.'
  )


def _from_npz(raw: Flat, source: Source) -> Flat:
  prefix = min(
    (k[: -len('embedding/kernel')] for k in raw if k.endswith('embedding/kernel')), key=len
  )
  # Other towers and the optimizer state are not ours.
  tree = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
  linen = any('MultiHeadDotProductAttention_0' in k for k in tree) and not any(
    'MultiHeadDotProductAttention_1' in k for k in tree
  )
  flat = {}
  for name, x in tree.items():
    parts = name.split('/')
    if parts[:2] == ['Transformer', 'encoderblock']:  # big_vision's scanned blocks, stacked.
      for i in range(x.shape[0]):
        flat['/'.join(['Transformer', f'encoderblock_{i}'] + _block_names(parts[2:], linen))] = x[i]
      continue
    if len(parts) > 2 and parts[0] == 'Transformer' and parts[1].startswith('encoderblock_'):
      parts = parts[:2] + _block_names(parts[2:], linen)
    elif name in ('pos_embedding', 'Transformer/pos_embedding'):  # big_vision: outside the encoder.
      parts = POS.split('/')
    flat['/'.join(parts)] = x
  source.naming = 'big_vision' if linen or 'pos_embedding' in tree else 'vision_transformer'
  source.gelu_approximate = True  # flax's nn.gelu default, which both code bases train with.
  if source.naming == 'big_vision' and 'cls' not in flat:
    pool = 'map' if any(k.startswith('MAPHead_0/') for k in tree) else 'gap'
    raise CheckpointError(
      f'{source.path} is a big_vision ViT without a CLS token (pool_type={pool!r}); this '
      "project's ViT classifies from a CLS token, so only pool_type='tok' models import."
    )
  return flat


def _block_names(parts: list[str], linen: bool) -> list[str]:
  return [_LINEN_BLOCK_NAMES.get(parts[0], parts[0])] + parts[1:] if linen else parts


def _from_torch(
  raw: Flat,
  names: list[str],
  modules: tuple[tuple[str, str, str], ...],
  params: dict[str, str],
  num_heads: int,
  source: Source,
) -> Flat:
  flat = {}
  compiled = [
    (re.compile(f'^{pattern}\\.(weight|bias)$'), target, layout)
    for pattern, target, layout in modules
  ]
  for name in names:
    x = raw[name]
    if name in params:
      flat[params[name]] = x
      continue
    for regex, target, layout in compiled:
      m = regex.match(name)
      if m:
        *layer, leaf = m.groups()
        if layout == 'fused_qkv':  # timm: q, k and v stacked along the output axis.
          for part, chunk in zip(('query', 'key', 'value'), np.split(x, 3, axis=0)):
            path = target.format(*layer, part)
            flat[f'{path}/{_leaf(leaf, "qkv")}'] = _torch_layout(
              chunk, leaf, 'qkv', num_heads, name
            )
        else:
          flat[f'{target.format(*layer)}/{_leaf(leaf, layout)}'] = _torch_layout(
            x, leaf, layout, num_heads, name
          )
        break
    else:
      raise CheckpointError(
        f'{source.path}: parameter {name!r} ({source.naming} naming) has no counterpart in this '
        "project's ViT; only plain ViT/DeiT classifiers (CLS token, no LayerScale or extra "
        'tokens) import.'
      )
  return flat


def _leaf(leaf: str, layout: str) -> str:
  if layout == 'norm':
    return 'scale' if leaf == 'weight' else 'bias'
  return 'kernel' if leaf == 'weight' else 'bias'


def _torch_layout(x: np.ndarray, leaf: str, layout: str, num_heads: int, name: str) -> np.ndarray:
  """One PyTorch weight or bias in the layout of the matching Flax module."""
  if layout in ('qkv', 'out') and x.shape[0] % num_heads:
    raise CheckpointError(
      f"{name} has shape {x.shape}, whose width {x.shape[0]} does not split into the model's "
      f"{num_heads} heads; set --config.model.num_heads to the checkpoint's."
    )
  if leaf == 'bias':
    return x.reshape(num_heads, -1) if layout == 'qkv' else x
  if layout == 'conv':
    return x.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
  if layout == 'dense':
    return x.T
  if layout == 'qkv':
    return x.T.reshape(x.shape[1], num_heads, -1)  # (out, in) -> (in, heads, head_dim).
  if layout == 'out':
    return x.T.reshape(num_heads, -1, x.shape[0])  # (out, in) -> (heads, head_dim, out).
  return x


def _prefix_tokens(rows: int) -> int:
  """How many of a position embedding's rows belong to prefix tokens (CLS, dist), not the grid."""
  for prefix in (0, 1, 2):
    if math.isqrt(rows - prefix) ** 2 == rows - prefix:
      return prefix
  raise CheckpointError(
    f'The position embedding has {rows} rows: not a square patch grid plus CLS (and dist) '
    'rows, which this importer needs.'
  )


def resize_pos_embedding(
  posemb: np.ndarray, num_tokens: int, method: str = 'bilinear'
) -> np.ndarray:
  """Interpolates the grid of a (1, 1 + g*g, D) position embedding to `num_tokens` rows; CLS kept.

  `jax.image.resize` samples at pixel centres (like
  `torch.nn.functional.interpolate(align_corners=False)`), with antialiasing when shrinking.
  """
  _check_choice('posemb_resize', method, RESIZE_METHODS)
  if posemb.shape[1] == num_tokens:
    return posemb
  old, new = math.isqrt(posemb.shape[1] - 1), math.isqrt(num_tokens - 1)
  if old * old != posemb.shape[1] - 1 or new * new != num_tokens - 1:
    raise CheckpointError(
      f'Cannot resize a position embedding of {posemb.shape[1]} rows to {num_tokens}: both '
      'need a CLS row plus a square grid.'
    )
  grid = posemb[0, 1:].reshape(old, old, -1)
  grid = np.asarray(jax.image.resize(jnp.asarray(grid), (new, new, grid.shape[-1]), method=method))
  return np.concatenate([posemb[:, :1], grid.reshape(1, new * new, -1)], axis=1)


def fit_to_model(
  flat: Flat,
  params_like: Any,
  source: Source,
  *,
  head: str = 'auto',
  posemb_resize: str = 'bilinear',
  drop_distillation_token: bool = False,
) -> Any:
  """Adapts converted params to the target model (prefix tokens, grid, head); checks every shape.

  `params_like` is the model's param tree (arrays or ShapeDtypeStructs). Returns a nested dict of
  fp32 numpy.
  """
  _check_choice('head', head, HEAD_MODES)
  flat = dict(flat)
  expected = {
    '/'.join(k.key for k in path): x
    for path, x in jax.tree_util.tree_flatten_with_path(params_like)[0]
  }
  if POS in flat:
    flat[POS] = _fit_pos_embedding(
      flat, expected[POS].shape[1], source, posemb_resize, drop_distillation_token
    )
  elif 'dist_token' in flat:
    raise CheckpointError(f'{source.path} has a distillation token but no position embedding.')
  if any(k.startswith('pooler/') for k in flat):
    flat = {k: v for k, v in flat.items() if not k.startswith('pooler/')}
    _note(
      source,
      'dropped the HF pooler (dense + tanh): classification reads the CLS token without it',
    )
  kernel = expected['head/kernel']
  classes = flat['head/kernel'].shape[-1] if 'head/kernel' in flat else None
  if head == 'reset' or (head == 'auto' and classes != kernel.shape[-1]):
    flat['head/kernel'] = np.zeros(kernel.shape, np.float32)
    flat['head/bias'] = np.zeros(expected['head/bias'].shape, np.float32)
    why = (
      'as asked'
      if head == 'reset'
      else (f'{classes} classes in the checkpoint' if classes else 'none saved')
    )
    _note(source, f'head zero-initialised for {kernel.shape[-1]} classes ({why})')
    if any(k.startswith('pre_logits/') for k in flat):
      flat = {k: v for k, v in flat.items() if not k.startswith('pre_logits/')}
      _note(source, 'dropped pre_logits with the head, as vision_transformer does for fine-tuning')
  if any(k.startswith('pre_logits/') for k in flat):
    raise CheckpointError(
      f'{source.path} has a pre_logits layer (representation_size) that this ViT lacks; set '
      '--config.pretrained.head=reset to drop it together with the head.'
    )
  tree = _unflatten(flat)
  mismatch = checkpoints.first_mismatch(tree, params_like)
  if mismatch:
    raise CheckpointError(
      f'{source.path} ({source.naming} naming) does not fit the model: {mismatch}. Set '
      "--config.model.* (variant, num_layers, hidden_size, ...) to the checkpoint's geometry."
    )
  return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tree)


def _fit_pos_embedding(
  flat: Flat, num_tokens: int, source: Source, method: str, drop_dist: bool
) -> np.ndarray:
  pos = flat[POS]
  prefix = _prefix_tokens(pos.shape[1])
  if 'dist_token' in flat:
    if not drop_dist:
      raise CheckpointError(
        f'{source.path} is a distilled DeiT (it has a distillation token); this ViT has only '
        'CLS. Set --config.pretrained.drop_distillation_token=true to drop the token and its '
        'head (the logits then change: fine-tune afterwards).'
      )
    del flat['dist_token']
    flat.pop('head_dist/kernel', None)
    flat.pop('head_dist/bias', None)
    if prefix == 2:
      pos = np.delete(pos, 1, axis=1)
      prefix = 1
    _note(
      source,
      'dropped the distillation token, its position and its head (logits differ from the original)',
    )
  if prefix == 0:
    # big_vision / timm no_embed_class: CLS joins after the position embedding is added.
    pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    _note(
      source, 'the checkpoint gives CLS no position embedding: a zero row was added (equivalent)'
    )
  elif prefix != 1:
    raise CheckpointError(
      f'{source.path}: the position embedding has {prefix} prefix rows but only CLS is known.'
    )
  if pos.shape[1] != num_tokens:
    old, new = math.isqrt(pos.shape[1] - 1), math.isqrt(num_tokens - 1)
    pos = resize_pos_embedding(pos, num_tokens, method)
    _note(source, f'position embedding grid resized from {old}x{old} to {new}x{new} ({method})')
  return pos


def _unflatten(flat: Flat) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, x in flat.items():
    *scopes, leaf = name.split('/')
    node = tree
    for scope in scopes:
      node = node.setdefault(scope, {})
    node[leaf] = x
  return tree


def hf_geometry(cfg: vit.ViTConfig) -> dict[str, int]:
  """The keyword arguments of `transformers.ViTConfig` that give the geometry of `cfg`."""
  return dict(
    hidden_size=cfg.hidden_size,
    num_hidden_layers=cfg.num_layers,
    num_attention_heads=cfg.num_heads,
    intermediate_size=cfg.mlp_dim,
    image_size=cfg.image_size,
    patch_size=cfg.patch_size,
    num_channels=cfg.num_channels,
    num_labels=cfg.num_classes,
  )


def _hf_numerics(path: str, num_heads: int, source: Source) -> None:
  """Reads what a state_dict cannot show (heads, LayerNorm epsilon, GELU) from HF's config.json."""
  if source.naming != 'hf':
    return
  config_file = epath.Path(path).parent / 'config.json'
  if not config_file.is_file():
    source.layer_norm_epsilon = 1e-12
    _note(
      source,
      'no config.json beside the file: assuming HF defaults (LayerNorm epsilon 1e-12, exact GELU)',
    )
    return
  hf = json.loads(config_file.read_text())
  heads = hf.get('num_attention_heads')
  if heads is not None and heads != num_heads:
    raise CheckpointError(
      f'{config_file} says num_attention_heads={heads} but the model has {num_heads}; set '
      f'--config.model.num_heads={heads}.'
    )
  act = hf.get('hidden_act', 'gelu')
  if act not in _HF_GELU:
    raise CheckpointError(
      f'{config_file} says hidden_act={act!r}; this ViT supports {", ".join(_HF_GELU)}.'
    )
  source.gelu_approximate = _HF_GELU[act]
  source.layer_norm_epsilon = float(hf.get('layer_norm_eps', 1e-12))


def load_pretrained(
  path: str,
  vit_cfg: vit.ViTConfig,
  *,
  fmt: str = 'auto',
  head: str = 'auto',
  posemb_resize: str = 'bilinear',
  drop_distillation_token: bool = False,
) -> tuple[vit.ViTConfig, Any, Source]:
  """Reads, converts and fits a foreign checkpoint for the model `vit_cfg` describes.

  Args:
    path: a .npz, .bin/.pt/.pth or .safetensors file (any path epath reads).
    vit_cfg: the target model's geometry.
    fmt: one of FORMATS; 'auto' = from the extension.
    head: one of HEAD_MODES: 'auto' zero-initialises the head when the class count differs, 'keep'
      requires it to fit, 'reset' always zero-initialises it.
    posemb_resize: one of RESIZE_METHODS, for a position-embedding grid of another size.
    drop_distillation_token: a distilled DeiT imports only with its token and head dropped.

  Returns:
    (`vit_cfg` with the source's numerics, the params as a nested dict of fp32 numpy, the Source:
    what was read and done).
  """
  # Options first: a bad one should not wait for a large file to load.
  _check_choice('head', head, HEAD_MODES)
  _check_choice('posemb_resize', posemb_resize, RESIZE_METHODS)
  source = Source(path=path, format=detect_format(path, fmt), naming='')
  raw = read_file(path, source.format)
  flat = convert(raw, vit_cfg.num_heads, source)
  _hf_numerics(path, vit_cfg.num_heads, source)
  vit_cfg = dataclasses.replace(
    vit_cfg,
    layer_norm_epsilon=source.layer_norm_epsilon,
    gelu_approximate=source.gelu_approximate,
  )
  if (source.layer_norm_epsilon, source.gelu_approximate) != (1e-6, False):
    gelu = 'tanh-approximated' if source.gelu_approximate else 'exact'
    _note(
      source,
      f"kept the source's numerics: LayerNorm epsilon {source.layer_norm_epsilon:g}, {gelu} GELU",
    )
  model = vit.create_model(vit_cfg)
  image = jnp.zeros((1, vit_cfg.image_size, vit_cfg.image_size, vit_cfg.num_channels))
  params_like = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), image)['params'])
  params = fit_to_model(
    flat,
    params_like,
    source,
    head=head,
    posemb_resize=posemb_resize,
    drop_distillation_token=drop_distillation_token,
  )
  return vit_cfg, params, source
