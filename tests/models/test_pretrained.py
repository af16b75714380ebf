"""Pretrained-weight import: logit parity with HF, timm and npz sources, position-embedding resize,
head handling, the `import_weights` job end to end, and one-line errors that leave the workdir
alone."""

import dataclasses
import functools
import json
import logging
import os
import re
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from vitprune_jax import checkpoints, jobs, parallel
from vitprune_jax.errors import UserError
from vitprune_jax.jobs import common, import_weights
from vitprune_jax.models import pretrained, vit

TOL = 1e-4  # Max abs logit difference the issue allows.
SMALL = dict(
  num_classes=10,
  image_size=16,
  patch_size=4,
  hidden_size=32,
  num_layers=2,
  num_heads=2,
  mlp_dim=64,
)
DIGITS = dict(
  num_classes=10,
  image_size=8,
  patch_size=2,
  hidden_size=16,
  num_layers=1,
  num_heads=2,
  mlp_dim=32,
  num_channels=1,
)  # helpers.tiny_config's model on digits.


def _images(cfg: vit.ViTConfig, n: int = 4) -> np.ndarray:
  return (
    np.random.default_rng(1)
    .normal(size=(n, cfg.image_size, cfg.image_size, cfg.num_channels))
    .astype(np.float32)
  )


@functools.lru_cache
def _forward(cfg: vit.ViTConfig):
  return jax.jit(lambda params, images: vit.create_model(cfg).apply({'params': params}, images)[0])


def _logits(cfg: vit.ViTConfig, params, images: np.ndarray) -> np.ndarray:
  return np.asarray(_forward(cfg)(params, jnp.asarray(images)))


def _hf_model(cfg: vit.ViTConfig, **hf_overrides):
  """A randomly initialised HF ViT of `cfg`'s geometry, every parameter perturbed (none 0 or 1)."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  kwargs = dict(pretrained.hf_geometry(cfg), layer_norm_eps=1e-6, hidden_act='gelu')
  model = transformers.ViTForImageClassification(
    transformers.ViTConfig(**{**kwargs, **hf_overrides})
  ).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.2 * torch.randn_like(p))
  return model


def _hf_logits(model, images: np.ndarray) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top

  with torch.no_grad():
    return model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()


def _timm_state_dict(hf_state: dict) -> dict:
  """HF (v5 module names) -> timm names, q/k/v fused into one `attn.qkv` as timm stores them."""
  import torch  # pylint: disable=g-import-not-at-top

  renames = [
    (r'^vit\.embeddings\.cls_token$', 'cls_token'),
    (r'^vit\.embeddings\.position_embeddings$', 'pos_embed'),
    (r'^vit\.embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^vit\.layers\.(\d+)\.attention\.o_proj\.', r'blocks.\1.attn.proj.'),
    (r'^vit\.layers\.(\d+)\.layernorm_before\.', r'blocks.\1.norm1.'),
    (r'^vit\.layers\.(\d+)\.layernorm_after\.', r'blocks.\1.norm2.'),
    (r'^vit\.layers\.(\d+)\.mlp\.', r'blocks.\1.mlp.'),
    (r'^vit\.layernorm\.', 'norm.'),
    (r'^classifier\.', 'head.'),
  ]
  out, qkv = {}, {}
  for name, x in hf_state.items():
    m = re.match(r'^vit\.layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$', name)
    if m:
      qkv[(m[1], m[3], m[2])] = x
      continue
    for pattern, repl in renames:
      if re.match(pattern, name):
        out[re.sub(pattern, repl, name)] = x
        break
    else:
      raise AssertionError(f'unexpected HF name {name}')
  for layer, leaf in {(layer, leaf) for layer, leaf, _ in qkv}:
    out[f'blocks.{layer}.attn.qkv.{leaf}'] = torch.cat([qkv[(layer, leaf, p)] for p in 'qkv'])
  return out


def _random_params(cfg: vit.ViTConfig, seed: int = 0):
  """Our model's param tree with every leaf random (the zero-initialised head and CLS too)."""
  image = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.num_channels))
  shapes = jax.eval_shape(
    lambda: vit.create_model(cfg).init(jax.random.PRNGKey(0), image)['params']
  )
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.normal(0.0, 0.2, s.shape).astype(np.float32), shapes)


def _big_vision_npz(params, path, scanned: bool) -> None:
  """Our params under big_vision's names: `params/img/`, linen block numbering, CLS without
  position embedding."""
  flat = flax.traverse_util.flatten_dict(params, sep='/')
  pos = flat.pop(pretrained.POS)
  out = {'cls': flat.pop('cls') + pos[:, :1], 'pos_embedding': pos[:, 1:]}
  renames = {
    'MultiHeadDotProductAttention_1': 'MultiHeadDotProductAttention_0',
    'LayerNorm_2': 'LayerNorm_1',
    'MlpBlock_3': 'MlpBlock_0',
  }
  blocks = {}
  for name, x in flat.items():
    parts = name.split('/')
    if parts[0] == 'Transformer' and parts[1].startswith('encoderblock_'):
      sub = '/'.join([renames.get(parts[2], parts[2])] + parts[3:])
      blocks.setdefault(sub, {})[int(parts[1].split('_')[1])] = x
      if not scanned:
        out[f'Transformer/{parts[1]}/{sub}'] = x
    else:
      out[name] = x
  if scanned:
    for sub, per_layer in blocks.items():
      out[f'Transformer/encoderblock/{sub}'] = np.stack([per_layer[i] for i in sorted(per_layer)])
  np.savez(
    path,
    **{f'params/img/{k}': v for k, v in out.items()},
    **{'params/txt/Embed_0/embedding': np.ones(3)},
  )


def _tiny_import_config(path: str):
  config = helpers.tiny_config(helpers.load_default_config(), epochs=1)
  config.mode = 'import_weights'
  config.pretrained.path = str(path)
  config.viz.num_images = 0
  return config


def _tree_listing(root) -> list[str]:
  return sorted(
    os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
  )


# Parity.


@pytest.mark.parametrize('filename', ['model.safetensors', 'pytorch_model.bin'])
def test_hf_checkpoint_gives_hf_logits(tmp_path, filename):
  cfg = vit.ViTConfig(**SMALL)
  model = _hf_model(cfg)
  if filename == 'model.safetensors':
    # v4 names (`encoder.layer.N.attention.attention.query`) and config.json.
    model.save_pretrained(tmp_path)
  else:
    torch = pytest.importorskip('torch')
    # v5 module names (`layers.N.attention.q_proj`).
    torch.save(model.state_dict(), tmp_path / filename)
    model.config.save_pretrained(tmp_path)
  imported_cfg, params, source = pretrained.load_pretrained(
    str(tmp_path / filename), cfg, head='keep'
  )
  images = _images(cfg)
  diff = np.abs(_logits(imported_cfg, params, images) - _hf_logits(model, images)).max()
  print(f'max abs logit difference, HF {filename}: {diff:.3g}')
  assert diff <= TOL
  assert imported_cfg == cfg and source.naming == 'hf' and source.notes == []


@pytest.mark.parametrize(
  'hf_numerics, expected',
  [
    (dict(layer_norm_eps=1e-12), dict(layer_norm_epsilon=1e-12)),  # HF ViTConfig's default.
    (dict(hidden_act='gelu_new'), dict(gelu_approximate=True)),  # tanh-approximated GELU.
  ],
)
def test_hf_numerics_are_kept(tmp_path, hf_numerics, expected):
  cfg = vit.ViTConfig(**SMALL)
  model = _hf_model(cfg, **hf_numerics)
  model.save_pretrained(tmp_path)
  imported_cfg, params, source = pretrained.load_pretrained(
    str(tmp_path / 'model.safetensors'), cfg
  )
  assert imported_cfg == dataclasses.replace(cfg, **expected)
  assert any("kept the source's numerics" in n for n in source.notes)
  images = _images(cfg)
  logits = _logits(imported_cfg, params, images)
  diff = np.abs(logits - _hf_logits(model, images)).max()
  print(f'max abs logit difference, HF {hf_numerics}: {diff:.3g}')
  assert diff <= TOL
  # The stage-by-stage forward (the RL environments') uses the same numerics.
  model = vit.create_model(imported_cfg)
  apply = functools.partial(model.apply, {'params': params})
  x = apply(jnp.asarray(images), method='embed')
  for layer in range(imported_cfg.num_layers):
    x, _ = apply(layer, x, jnp.ones(x.shape[:2]), method='block')
  np.testing.assert_allclose(apply(x, method='readout'), logits, atol=1e-5)


def test_hf_state_dict_without_config_json_assumes_hf_defaults(tmp_path):
  torch = pytest.importorskip('torch')
  cfg = vit.ViTConfig(**SMALL)
  torch.save(_hf_model(cfg).state_dict(), tmp_path / 'weights.pt')
  imported_cfg, _, source = pretrained.load_pretrained(str(tmp_path / 'weights.pt'), cfg)
  assert imported_cfg.layer_norm_epsilon == 1e-12 and not imported_cfg.gelu_approximate
  assert any('no config.json beside the file' in n for n in source.notes)


def test_timm_state_dict_gives_hf_logits(tmp_path):
  torch = pytest.importorskip('torch')
  cfg = vit.ViTConfig(**SMALL)
  model = _hf_model(cfg)
  # In the wrapper DeiT's training saves.
  torch.save({'model': _timm_state_dict(model.state_dict()), 'epoch': 3}, tmp_path / 'deit.pth')
  imported_cfg, params, source = pretrained.load_pretrained(
    str(tmp_path / 'deit.pth'), cfg, head='keep'
  )
  images = _images(cfg)
  diff = np.abs(_logits(imported_cfg, params, images) - _hf_logits(model, images)).max()
  print(f'max abs logit difference, timm-named .pth: {diff:.3g}')
  assert diff <= TOL and imported_cfg == cfg and source.naming == 'timm'


def test_vision_transformer_npz_round_trip(tmp_path):
  cfg = vit.ViTConfig(**SMALL, num_channels=3)
  # What vision_transformer's own model computes.
  jax_cfg = dataclasses.replace(cfg, gelu_approximate=True)
  params = _random_params(cfg)
  np.savez(tmp_path / 'vit.npz', **flax.traverse_util.flatten_dict(params, sep='/'))
  imported_cfg, imported, source = pretrained.load_pretrained(
    str(tmp_path / 'vit.npz'), cfg, head='keep'
  )
  assert imported_cfg == jax_cfg and source.naming == 'vision_transformer'
  jax.tree_util.tree_map(np.testing.assert_array_equal, imported, params)
  images = _images(cfg)
  diff = np.abs(_logits(imported_cfg, imported, images) - _logits(jax_cfg, params, images)).max()
  print(f'max abs logit difference, vision_transformer npz: {diff:.3g}')
  assert diff == 0.0


@pytest.mark.parametrize('scanned', [False, True])
def test_big_vision_npz_round_trip(tmp_path, scanned):
  cfg = vit.ViTConfig(**SMALL)
  jax_cfg = dataclasses.replace(cfg, gelu_approximate=True)
  params = _random_params(cfg)
  _big_vision_npz(params, tmp_path / 'bv.npz', scanned)
  imported_cfg, imported, source = pretrained.load_pretrained(
    str(tmp_path / 'bv.npz'), cfg, head='keep'
  )
  assert imported_cfg == jax_cfg and source.naming == 'big_vision'
  np.testing.assert_array_equal(imported['Transformer']['posembed_input']['pos_embedding'][0, 0], 0)
  images = _images(cfg)
  diff = np.abs(_logits(imported_cfg, imported, images) - _logits(jax_cfg, params, images)).max()
  print(f'max abs logit difference, big_vision npz (scanned={scanned}): {diff:.3g}')
  assert diff <= 1e-6
  assert any('zero row' in n for n in source.notes)


def test_big_vision_without_cls_token_is_a_clear_error(tmp_path):
  cfg = vit.ViTConfig(**SMALL)
  _big_vision_npz(_random_params(cfg), tmp_path / 'bv.npz', scanned=False)
  with np.load(tmp_path / 'bv.npz') as f:
    arrays = {k: f[k] for k in f.files if k != 'params/img/cls'}
  arrays['params/img/MAPHead_0/probe'] = np.zeros((1, 1, 32))
  np.savez(tmp_path / 'map.npz', **arrays)
  with pytest.raises(checkpoints.CheckpointError, match=r"without a CLS token \(pool_type='map'\)"):
    pretrained.load_pretrained(str(tmp_path / 'map.npz'), cfg)


# Position embedding resize and head.


def test_resize_pos_embedding_keeps_cls_and_interpolates_a_linear_grid():
  old, new, d = 4, 8, 3
  # Pixel centres in [0, 1]: what jax.image.resize samples.
  centres = lambda g: (np.arange(g) + 0.5) / g
  linear = lambda g: np.stack(
    [(k + 1) * (0.3 * centres(g)[:, None] - 0.7 * centres(g)[None, :]) + 0.1 * k for k in range(d)],
    axis=-1,
  )
  cls = np.full((1, 1, d), 7.0, np.float32)
  posemb = np.concatenate([cls, linear(old).reshape(1, old * old, d)], axis=1).astype(np.float32)

  assert pretrained.resize_pos_embedding(posemb, 1 + old * old) is posemb  # Same size: untouched.
  up = pretrained.resize_pos_embedding(posemb, 1 + new * new)
  assert up.shape == (1, 1 + new * new, d)
  np.testing.assert_array_equal(up[:, :1], cls)
  # Bilinear reproduces a linear function wherever no edge clamps it: output centres inside the old
  # outer centres.
  grid = up[0, 1:].reshape(new, new, d)
  np.testing.assert_allclose(grid[1:-1, 1:-1], linear(new)[1:-1, 1:-1], atol=1e-5)
  smooth = lambda g: (
    np.sin(2.0 * centres(g))[:, None, None] * np.cos(1.5 * centres(g))[None, :, None] * np.ones(d)
  )
  big = np.concatenate([cls, smooth(16).reshape(1, 256, d)], axis=1).astype(np.float32)
  for method, tol in [('bilinear', 0.03), ('bicubic', 0.03)]:
    small = pretrained.resize_pos_embedding(big, 1 + 12 * 12, method)[0, 1:].reshape(12, 12, d)
    np.testing.assert_allclose(small, smooth(12), atol=tol)
  with pytest.raises(UserError, match="Unknown pretrained.posemb_resize 'cubic-ish'"):
    pretrained.resize_pos_embedding(big, 145, 'cubic-ish')


def test_import_at_another_image_size_resizes_the_grid(tmp_path):
  cfg = vit.ViTConfig(**SMALL)
  model = _hf_model(cfg)
  model.save_pretrained(tmp_path)
  bigger = vit.ViTConfig(**{**SMALL, 'image_size': 24})
  bigger, params, source = pretrained.load_pretrained(
    str(tmp_path / 'model.safetensors'), bigger, head='keep'
  )
  pos = params['Transformer']['posembed_input']['pos_embedding']
  assert pos.shape == (1, 1 + 6 * 6, 32)
  np.testing.assert_allclose(
    pos[0, 0], model.vit.embeddings.position_embeddings[0, 0].detach().numpy(), rtol=1e-6
  )
  assert 'position embedding grid resized from 4x4 to 6x6 (bilinear)' in source.notes
  assert _logits(bigger, params, _images(bigger)).shape == (4, 10)


def test_head_is_zero_initialised_when_the_class_count_differs(tmp_path):
  cfg = vit.ViTConfig(**SMALL)
  _hf_model(cfg).save_pretrained(tmp_path)
  five = vit.ViTConfig(**{**SMALL, 'num_classes': 5})
  _, params, source = pretrained.load_pretrained(str(tmp_path / 'model.safetensors'), five)
  assert params['head']['kernel'].shape == (32, 5) and not params['head']['kernel'].any()
  assert 'head zero-initialised for 5 classes (10 classes in the checkpoint)' in source.notes
  with pytest.raises(
    checkpoints.CheckpointError,
    match=r"\['head'\]\['bias'\] has shape \(10,\) in the checkpoint " r'but \(5,\) in the model',
  ):
    pretrained.load_pretrained(str(tmp_path / 'model.safetensors'), five, head='keep')
  _, same, source = pretrained.load_pretrained(
    str(tmp_path / 'model.safetensors'), cfg, head='reset'
  )
  assert not same['head']['kernel'].any() and 'as asked' in source.notes[0]


def test_pre_logits_is_dropped_only_with_the_head(tmp_path):
  cfg = vit.ViTConfig(**SMALL)
  flat = flax.traverse_util.flatten_dict(_random_params(cfg), sep='/')
  flat.update({'pre_logits/kernel': np.ones((32, 32)), 'pre_logits/bias': np.ones(32)})
  # The prefix of old vision_transformer checkpoints.
  np.savez(tmp_path / 'i21k.npz', **{f'opt/target/{k}': v for k, v in flat.items()})
  with pytest.raises(
    checkpoints.CheckpointError, match='pre_logits layer .* --config.pretrained.head=reset'
  ):
    pretrained.load_pretrained(str(tmp_path / 'i21k.npz'), cfg)
  _, params, source = pretrained.load_pretrained(str(tmp_path / 'i21k.npz'), cfg, head='reset')
  assert 'pre_logits' not in params and any('dropped pre_logits' in n for n in source.notes)


def test_distilled_deit_needs_the_drop_flag(tmp_path):
  torch = pytest.importorskip('torch')
  cfg = vit.ViTConfig(**SMALL)
  state = _timm_state_dict(_hf_model(cfg).state_dict())
  pos = state['pos_embed']
  state.update(
    dist_token=torch.ones(1, 1, 32),
    pos_embed=torch.cat([pos[:, :1], torch.ones(1, 1, 32), pos[:, 1:]], 1),
    **{'head_dist.weight': torch.ones(10, 32), 'head_dist.bias': torch.ones(10)},
  )
  torch.save(state, tmp_path / 'deit_distilled.pth')
  with pytest.raises(
    checkpoints.CheckpointError, match='distilled DeiT .*drop_distillation_token=true'
  ):
    pretrained.load_pretrained(str(tmp_path / 'deit_distilled.pth'), cfg)
  _, params, source = pretrained.load_pretrained(
    str(tmp_path / 'deit_distilled.pth'), cfg, drop_distillation_token=True
  )
  np.testing.assert_array_equal(
    params['Transformer']['posembed_input']['pos_embedding'], pos.numpy()
  )
  assert any('dropped the distillation token' in n for n in source.notes)


# Errors: one line, naming what is wrong.


def _one_line_error(exc_type, fn, *args, **kwargs) -> str:
  with pytest.raises(exc_type) as e:
    fn(*args, **kwargs)
  assert '\n' not in str(e.value)
  return str(e.value)


def test_errors_are_one_line_and_name_the_parameter(tmp_path):
  torch = pytest.importorskip('torch')
  cfg = vit.ViTConfig(**SMALL)
  state = _hf_model(cfg).state_dict()
  missing = {k: v for k, v in state.items() if k != 'vit.layers.1.layernorm_after.weight'}
  torch.save(missing, tmp_path / 'missing.bin')
  message = _one_line_error(
    checkpoints.CheckpointError, pretrained.load_pretrained, str(tmp_path / 'missing.bin'), cfg
  )
  assert (
    "['Transformer']['encoderblock_1']['LayerNorm_2']['scale'] is missing from the checkpoint"
    in message
  )

  torch.save(state, tmp_path / 'model.bin')
  wider = vit.ViTConfig(**{**SMALL, 'mlp_dim': 128})
  message = _one_line_error(
    checkpoints.CheckpointError, pretrained.load_pretrained, str(tmp_path / 'model.bin'), wider
  )
  assert re.search(
    r"\['MlpBlock_3'\]\['Dense_0'\]\['bias'\] has shape \(64,\) in the checkpoint but \(128,\)",
    message,
  )
  shallower = vit.ViTConfig(**{**SMALL, 'num_layers': 1})
  message = _one_line_error(
    checkpoints.CheckpointError,
    pretrained.load_pretrained,
    str(tmp_path / 'model.bin'),
    shallower,
  )
  assert "['encoderblock_1']" in message and 'in the checkpoint but not in the model' in message

  torch.save({**state, 'vit.layers.0.ls1.gamma': torch.ones(32)}, tmp_path / 'layerscale.bin')
  message = _one_line_error(
    checkpoints.CheckpointError, pretrained.load_pretrained, str(tmp_path / 'layerscale.bin'), cfg
  )
  assert "'layers.0.ls1.gamma' (hf naming) has no counterpart" in message

  message = _one_line_error(
    UserError, pretrained.load_pretrained, str(tmp_path / 'model.ckpt'), cfg
  )
  assert 'Cannot tell the format of' in message and 'pretrained.format=' in message
  message = _one_line_error(
    UserError, pretrained.load_pretrained, str(tmp_path / 'model.bin'), cfg, fmt='onnx'
  )
  assert "Unknown pretrained.format 'onnx'" in message
  message = _one_line_error(
    UserError, pretrained.load_pretrained, str(tmp_path / 'absent.npz'), cfg
  )
  assert 'absent.npz does not exist' in message
  (tmp_path / 'garbage.npz').write_bytes(b'not a zip file')
  message = _one_line_error(
    checkpoints.CheckpointError, pretrained.load_pretrained, str(tmp_path / 'garbage.npz'), cfg
  )
  assert 'Could not read' in message


def test_hf_config_with_other_head_count_is_an_error(tmp_path):
  cfg = vit.ViTConfig(**SMALL)
  _hf_model(cfg).save_pretrained(tmp_path)
  four_heads = vit.ViTConfig(**{**SMALL, 'num_heads': 4})  # Same shapes: only config.json can tell.
  message = _one_line_error(
    checkpoints.CheckpointError,
    pretrained.load_pretrained,
    str(tmp_path / 'model.safetensors'),
    four_heads,
  )
  assert 'num_attention_heads=2 but the model has 4' in message


# The job, from config to a checkpoint that the other modes reuse.


@pytest.mark.slow
def test_import_job_then_evaluate_and_train_from_it(tmp_path, caplog):
  cfg = vit.ViTConfig(**DIGITS)
  params = _random_params(cfg)
  np.savez(tmp_path / 'digits.npz', **flax.traverse_util.flatten_dict(params, sep='/'))
  config = _tiny_import_config(tmp_path / 'digits.npz')
  with caplog.at_level(logging.INFO):
    results = import_weights.run(config, str(tmp_path / 'imported'))
  assert f'--config.init.vit_dir={tmp_path / "imported"}' in caplog.text  # How to reuse it.
  assert results['naming'] == 'vision_transformer'
  assert results['num_params'] == sum(x.size for x in jax.tree_util.tree_leaves(params))
  assert (
    json.loads((tmp_path / 'imported' / 'import_weights_results.json').read_text())['format']
    == 'npz'
  )

  model, restored, meta = common.load_vit(config, str(tmp_path / 'imported'), parallel.make_mesh())
  # The JAX source's GELU travels along.
  assert model.config == dataclasses.replace(cfg, gelu_approximate=True)
  assert meta['checkpoint_step'] == 0 and meta['source_naming'] == 'vision_transformer'
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, params)

  config.mode = 'evaluate'
  config.init.vit_dir = str(tmp_path / 'imported')
  evaluated = jobs.run(config, str(tmp_path / 'eval'))
  assert evaluated['checkpoint_step'] == 0 and evaluated['num_examples'] == 359

  # Training from the import at a zero learning rate keeps the weights: it scores what evaluate did.
  config.mode = 'train'  # Starts from init.vit_dir, the import.
  config.train.learning_rate = 0.0
  trained = jobs.run(config, str(tmp_path / 'train'))
  assert trained['test_accuracy'] == pytest.approx(evaluated['test_accuracy'], abs=1e-9)


def test_import_job_errors_leave_the_workdir_alone(tmp_path):
  cfg = vit.ViTConfig(**DIGITS)
  np.savez(tmp_path / 'digits.npz', **flax.traverse_util.flatten_dict(_random_params(cfg), sep='/'))
  workdir = tmp_path / 'run'
  import_weights.run(_tiny_import_config(tmp_path / 'digits.npz'), str(workdir))
  (workdir / 'notes.txt').write_text('mine')
  before = _tree_listing(workdir)

  message = _one_line_error(
    UserError, import_weights.run, _tiny_import_config(tmp_path / 'digits.npz'), str(workdir)
  )
  assert 'already holds a checkpoint' in message and 'nothing was changed' in message
  wrong = _tiny_import_config(tmp_path / 'digits.npz')
  wrong.model.hidden_size = 32
  message = _one_line_error(
    checkpoints.CheckpointError, import_weights.run, wrong, str(tmp_path / 'fresh')
  )
  assert (
    "['Transformer']['encoder_norm']['bias'] has shape (16,) in the checkpoint but (32,)" in message
  )
  assert not (tmp_path / 'fresh').exists()
  message = _one_line_error(
    UserError, import_weights.run, _tiny_import_config(''), str(tmp_path / 'fresh')
  )
  assert 'needs --config.pretrained.path' in message
  assert _tree_listing(workdir) == before


@pytest.mark.slow
def test_import_from_the_command_line(tmp_path):
  cfg = vit.ViTConfig(**DIGITS)
  model = _hf_model(cfg)
  model.save_pretrained(tmp_path / 'hf')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'vitprune_jax.main',
      '--config',
      'configs/digits_vit.py',
      '--workdir',
      str(tmp_path / 'imported'),
      '--config.mode=import_weights',
      f'--config.pretrained.path={tmp_path / "hf" / "model.safetensors"}',
      '--config.model.hidden_size=16',
      '--config.model.num_layers=1',
      '--config.model.num_heads=2',
      '--config.model.mlp_dim=32',
    ],
    cwd=helpers.REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = _tiny_import_config('')
  config.mode = 'evaluate'
  config.init.vit_dir = str(tmp_path / 'imported')
  evaluated = jobs.run(config, str(tmp_path / 'eval'))
  assert evaluated['checkpoint_step'] == 0
  reused, restored, _ = common.load_vit(config, config.init.vit_dir, parallel.make_mesh())
  images = _images(cfg)
  assert np.abs(_logits(reused.config, restored, images) - _hf_logits(model, images)).max() <= TOL
