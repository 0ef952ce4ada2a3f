"""The status line and the run timeline behind the throughput plot."""

from __future__ import annotations

import pyarrow as pa
import pytest

from enrich import columns as C
from enrich.progress import ProgressReporter, Timeline


def _batch(n: int, rejected: int, tokens: int) -> pa.Table:
    return pa.table({
        C.REASON: pa.array([None] * (n - rejected) + ["truncated"] * rejected, pa.string()),
        C.OUTPUT_TOKENS: pa.array([tokens] * (n - rejected) + [None] * rejected, pa.int32()),
    })


def test_status_line_counts_rates_and_eta() -> None:
    p = ProgressReporter(total_bytes=1000, total_shards=4, started=100.0)
    p.add(_batch(10, 2, 5))
    p.add(_batch(10, 0, 5))
    line = p.line(done_bytes=250, done_shards=1, now=110.0)
    assert line == "progress: 20 rows (18 ok, 2 rejected), 1/4 shards, 2.0 rows/s, 9 tok/s, ETA 30s"
    assert p.line(done_bytes=1000, done_shards=4, now=110.0).endswith("ETA 0s")
    assert p.line(done_bytes=0, done_shards=0, now=110.0).endswith("ETA ?")


def test_status_line_is_rate_limited() -> None:
    p = ProgressReporter(total_bytes=10, total_shards=1, every_seconds=3600)
    assert p.maybe_log(1, 0) is not None  # the first call logs
    assert p.maybe_log(2, 0) is None
    assert p.maybe_log(2, 0, force=True) is not None


def test_first_status_line_logs_right_after_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first line is logged whatever the clock reads: time.monotonic() counts from boot,
    so on a machine up for 5 s it is 5.0, well under `every_seconds` (whatever this machine's
    uptime, the clock is pinned to such a young boot here)."""
    clock = iter([5.0, 6.0, 5.0 + 3600])
    monkeypatch.setattr("enrich.progress.time.monotonic", lambda: next(clock))
    p = ProgressReporter(total_bytes=10, total_shards=1, every_seconds=3600, started=4.0)
    assert p.maybe_log(1, 0) is not None  # 5.0 s after boot: still logs the first line
    assert p.maybe_log(2, 0) is None  # 1 s later: rate-limited
    assert p.maybe_log(3, 0) is not None  # an hour after the first line: logs again


def test_timeline_keeps_points_a_step_apart_and_the_latest_totals() -> None:
    t = Timeline(step=1.0)
    for i, seconds in enumerate([0.2, 0.5, 0.9, 1.5, 1.6, 3.0]):
        t.add(seconds, rows=10 * (i + 1), tokens=100 * (i + 1))
    assert t.points == [(0.0, 0, 0), (1.5, 40, 400), (3.0, 60, 600)]
    t.add(3.2, rows=70, tokens=700)  # within a step of the last kept point: kept as the latest
    assert t.points[-2:] == [(3.0, 60, 600), (3.2, 70, 700)]
    t.add(3.3, rows=75, tokens=750)
    assert t.points[-2:] == [(3.0, 60, 600), (3.3, 75, 750)]


def test_timeline_stays_bounded_and_keeps_start_and_end() -> None:
    t = Timeline(step=1.0, max_points=100)
    for i in range(1, 10_001):
        t.add(float(i), rows=i, tokens=2 * i)
    assert len(t.points) <= 100
    assert t.points[0] == (0.0, 0, 0) and t.points[-1] == (10_000.0, 10_000, 20_000)
    times = [p[0] for p in t.points]
    assert times == sorted(times) and t.step >= 64
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:]))
    burst = Timeline(step=1.0)  # rows arriving 0.02 s apart, forever: points still a step apart
    for i in range(1, 1001):
        burst.add(i * 0.02, rows=i, tokens=i)
    times = [p[0] for p in burst.points[:-1]]
    assert len(burst.points) >= 20 and all(b - a >= 1.0 for a, b in zip(times, times[1:]))
