"""Import an AugReg ViT-B/16 ImageNet-1k checkpoint (google-research/vision_transformer `.npz`) for
every mode.

The file is published by vision_transformer (gs://vit_models/augreg/), e.g.
`B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz`:

  python -m vitprune_jax.main --config configs/import_vit_b16.py --workdir runs/vit_b16 \
      --config.pretrained.path=/path/to/B_16-...-res_224.npz
  python -m vitprune_jax.main --config configs/import_vit_b16.py --workdir runs/vit_b16_eval \
      --config.mode=evaluate --config.init.vit_dir=runs/vit_b16 --config.data.manual_dir=<tarballs>

An ImageNet-21k pre-training file (no `--imagenet2012-...` suffix) imports too: its 21843-class head
(and any pre_logits layer) is replaced by a zero-initialised 1000-class head, ready for `mode=train`
with
`--config.init.vit_dir=runs/vit_b16`.
AugReg models see images scaled to [-1, 1], hence `minus_one_to_one`.
"""

from configs import imagenet_deit_s


def get_config():
  config = imagenet_deit_s.get_config()
  config.mode = 'import_weights'
  config.data.normalization = 'minus_one_to_one'
  config.model.variant = 'B/16'
  config.model.dtype = (
    'float32'  # What the checkpoint's users compute in; bfloat16 is faster on TPUs.
  )
  config.pretrained.format = 'npz'
  return config
