"""What the flat step loops of the jobs share: one predicate for periodic work, one progress line.

`itstime` follows big_vision's `utils.itstime`: work due every `every_steps` steps also falls due at
the last step and at a requested halt, so a loop asks one question at one place for each kind of
work.
"""

import time


def itstime(step: int, every_steps: int, total_steps: int, *, halt_step: int | None = None) -> bool:
  """True when periodic work is due after `step` (1-based: steps done so far)."""
  if step == total_steps or (halt_step is not None and step == halt_step):
    return True
  return every_steps > 0 and step % every_steps == 0


class Eta:
  """Steps per second since the loop started, and the time left at that rate."""

  def __init__(self, start_step: int, total_steps: int):
    self.start_step, self.total_steps = start_step, total_steps
    self.t0 = time.perf_counter()

  def __call__(self, step: int) -> str:
    elapsed = time.perf_counter() - self.t0
    done = step - self.start_step
    if done <= 0 or elapsed <= 0:
      return 'ETA unknown'
    left = (self.total_steps - step) * elapsed / done
    return f'{done / elapsed:.1f} steps/s, ETA {_hms(left)}'


def _hms(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'
