"""The speed benchmark's statistics, by hand (timings themselves are never tested)."""

import pytest

from benchmarks import pruning_speed


def test_summary_of_call_times():
  # 21 calls of 0.10, 0.11, ..., 0.30 s, in reverse; p95 = sorted[round(0.95 * 20)] = sorted[19].
  seconds = [0.10 + 0.01 * i for i in range(21)][::-1]
  s = pruning_speed.summary(seconds, batch_size=4)
  assert s['median_s'] == pytest.approx(0.20)
  assert s['min_s'] == pytest.approx(0.10)
  assert s['p95_s'] == pytest.approx(0.29)
  assert s['images_per_s'] == pytest.approx(4 / 0.20)
  assert s['images_per_s_best'] == pytest.approx(4 / 0.10)
