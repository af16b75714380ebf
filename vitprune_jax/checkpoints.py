"""Orbax checkpoints of a run: `<workdir>/checkpoints` (latest, to resume) and `<workdir>/best` (to
reuse).

Each checkpoint holds three items: `params` (what later runs reuse), `opt` (optimizer state, step
and RNG, only needed to resume) and `meta` (JSON: model geometry, dataset, epoch, metrics), so a
later run can rebuild the model from the checkpoint alone. Reading never deletes anything: a corrupt
or mismatched checkpoint raises a `CheckpointError` that says what to do, and managers opened for
reuse are read-only.
"""

import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

from vitprune_jax.errors import UserError

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'
BEST_METRIC = 'val_accuracy'


def _manager(
  directory: str,
  *,
  read_only: bool,
  max_to_keep: Optional[int] = None,
  best: bool = False,
  opt: bool = True,
) -> ocp.CheckpointManager:
  """A manager that knows its items' handlers, so metadata can be read before anything is
  restored."""
  handlers = {'params': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}
  if opt:
    handlers['opt'] = ocp.StandardCheckpointHandler()
  # `latest` and `best` save the same step concurrently; without their own barrier names the hosts'
  # background threads can pair up wrongly at the shared 'async_write_complete.<step>' barrier and
  # one host waits forever.
  multiprocessing = ocp.options.MultiprocessingOptions(
    barrier_sync_key_prefix=os.path.basename(directory)
  )
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    create=not read_only,
    read_only=read_only,
    best_fn=(lambda m: m[BEST_METRIC]) if best else None,
    best_mode='max',
    multiprocessing_options=multiprocessing,
  )
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


class CheckpointError(UserError):
  """A checkpoint could not be read or does not fit the model; nothing was deleted."""


def _abstract(tree: Any) -> Any:
  """Shape/dtype/sharding skeleton of a pytree of arrays: the restore target."""
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree
  )


def first_mismatch(saved: Any, expected: Any) -> Optional[str]:
  """Names the first parameter whose presence or shape differs between a checkpoint and the
  model."""
  flat_saved = {
    jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]
  }
  flat_exp = {
    jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(expected)[0]
  }
  for name, exp in flat_exp.items():
    if name not in flat_saved:
      return f'{name} is missing from the checkpoint'
    if tuple(flat_saved[name].shape) != tuple(exp.shape):
      return (
        f'{name} has shape {tuple(flat_saved[name].shape)} in the checkpoint '
        f'but {tuple(exp.shape)} in the model'
      )
  for name in flat_saved:
    if name not in flat_exp:
      return f'{name} is in the checkpoint but not in the model'
  return None


def _abspath(path: str) -> str:
  """Local paths made absolute (orbax needs that); URLs such as gs://bucket/run are kept as they
  are."""
  return path.rstrip('/') if '://' in path else os.path.abspath(path)


def _one_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f'{type(e).__name__}: {text[0] if text else ""}'[:300]


class Checkpointer:
  """Latest and best checkpoints of one run directory."""

  def __init__(self, workdir: str, *, read_only: bool = False, max_to_keep: int = 2):
    self.workdir = workdir
    root = _abspath(workdir)
    self.latest = _manager(
      os.path.join(root, LATEST_DIR), read_only=read_only, max_to_keep=max_to_keep
    )
    self.best = _manager(
      os.path.join(root, BEST_DIR), read_only=read_only, max_to_keep=1, best=True, opt=False
    )

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def save(
    self, step: int, params: Any, opt: Any, meta: dict[str, Any], *, best: bool = False
  ) -> None:
    """Saves to `checkpoints/`; with `best=True` also offers it to `best/`, which keeps the top val
    accuracy."""
    args = ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      opt=ocp.args.StandardSave(opt),
      meta=ocp.args.JsonSave(meta),
    )
    self.latest.save(step, args=args, force=True)
    if best:
      best_args = ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)
      )
      self.best.save(
        step, args=best_args, metrics={BEST_METRIC: float(meta[BEST_METRIC])}, force=True
      )

  def save_params(self, step: int, params: Any, meta: dict[str, Any]) -> None:
    """Saves params alone to `best/`, e.g. imported weights: a starting point for other runs,
    nothing to resume."""
    args = ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta))
    # Ranks below any real validation accuracy, so a run that trains in this workdir supersedes it.
    self.best.save(step, args=args, metrics={BEST_METRIC: -1.0}, force=True)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()

  def restore_latest(self, params: Any, opt: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Restores the latest checkpoint into the structure (and shardings) of `params` and `opt`."""
    step = self.latest_step()
    return _restore(self.latest, step, params, opt)


def _restore(
  mngr: ocp.CheckpointManager, step: int, params: Any, opt: Any = None
) -> tuple[Any, Any, dict[str, Any]]:
  where = os.path.join(str(mngr.directory), str(step))
  try:
    saved = mngr.item_metadata(step)
    saved_params = saved['params'] if saved is not None else None
  except Exception as e:  # orbax raises many types for damaged directories.
    raise CheckpointError(
      f'Checkpoint {where} is unreadable ({_one_line(e)}); it was left untouched: '
      'delete it yourself or use another --workdir.'
    ) from e
  if saved_params is None:
    raise CheckpointError(
      f'Checkpoint {where} has no params item; it was left untouched: '
      'delete it yourself or use another --workdir.'
    )
  mismatch = first_mismatch(saved_params, params)
  if mismatch:
    raise CheckpointError(
      f'Checkpoint {where} does not match the model: {mismatch}. '
      'Use the config that wrote it, or another --workdir.'
    )
  items = {'params': ocp.args.StandardRestore(_abstract(params)), 'meta': ocp.args.JsonRestore()}
  if opt is not None:
    items['opt'] = ocp.args.StandardRestore(_abstract(opt))
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:
    raise CheckpointError(
      f'Checkpoint {where} could not be restored ({_one_line(e)}); it was left '
      'untouched: use the config that wrote it, or another --workdir.'
    ) from e
  return (
    restored['params'],
    restored.get('opt') if opt is not None else None,
    dict(restored['meta']),
  )


def read_meta(path: str) -> tuple[str, int, dict[str, Any]]:
  """Finds the checkpoint to reuse under `path` and returns (its run dir, step, meta).

  `path` may be a run workdir (its best checkpoint is preferred, then its latest) or a
  `checkpoints`/`best` directory itself.
  """
  path = _abspath(path)
  if os.path.basename(path) in (LATEST_DIR, BEST_DIR):
    candidates = [(os.path.dirname(path), os.path.basename(path))]
  else:
    candidates = [(path, BEST_DIR), (path, LATEST_DIR)]
  for run_dir, sub in candidates:
    if not epath.Path(run_dir, sub).is_dir():  # epath, not os.path: run dirs may live on gs://.
      continue
    mngr = _manager(
      os.path.join(run_dir, sub), read_only=True, best=sub == BEST_DIR, opt=sub == LATEST_DIR
    )
    step = mngr.latest_step() if sub == LATEST_DIR else (mngr.best_step() or mngr.latest_step())
    if step is None:
      continue
    try:
      meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    except Exception as e:
      raise CheckpointError(
        f'Checkpoint {os.path.join(run_dir, sub, str(step))} is unreadable '
        f'({_one_line(e)}); it was left untouched.'
      ) from e
    return os.path.join(run_dir, sub), step, dict(meta)
  raise CheckpointError(
    f'No checkpoint found under {path}: train one first (mode=train) or point '
    '--config.eval.checkpoint_dir at a run directory.'
  )


def load_params(ckpt_dir: str, step: int, params_like: Any) -> Any:
  """Restores only the params of a checkpoint found by `read_meta`, shaped and sharded like
  `params_like`."""
  sub = os.path.basename(os.path.normpath(ckpt_dir))
  mngr = _manager(ckpt_dir, read_only=True, best=sub == BEST_DIR, opt=sub == LATEST_DIR)
  params, _, _ = _restore(mngr, step, params_like)
  return params
