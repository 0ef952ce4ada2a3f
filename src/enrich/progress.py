"""A periodic one-line status for logs (works in `ray job logs`, where progress bars don't).

    progress: 1200 rows (1150 ok, 50 rejected), 3/8 shards, 41.2 rows/s, 980 tok/s, ETA 2m10s

It also keeps the run's timeline (cumulative rows and tokens over time) for the run report's
throughput plot, bounded in size however long the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from enrich import columns as C

log = logging.getLogger("enrich.progress")
MAX_TIMELINE_POINTS = 2000


class Timeline:
    """(seconds since start, rows done, output tokens done) points at least `step` apart, plus
    the latest totals; when full, every other point is dropped and `step` doubles, so memory
    stays bounded however long the run."""

    def __init__(self, step: float = 1.0, max_points: int = MAX_TIMELINE_POINTS) -> None:
        self.step, self.max_points = step, max_points
        self._kept: list[tuple[float, int, int]] = [(0.0, 0, 0)]
        self._latest: tuple[float, int, int] | None = None

    @property
    def points(self) -> list[tuple[float, int, int]]:
        return self._kept + ([self._latest] if self._latest else [])

    def add(self, seconds: float, rows: int, tokens: int) -> None:
        if seconds - self._kept[-1][0] < self.step:
            self._latest = (seconds, rows, tokens)  # too close to the last kept point: pending
            return
        self._kept.append((seconds, rows, tokens))
        self._latest = None
        if len(self._kept) > self.max_points:
            self._kept = self._kept[:1] + self._kept[2::2] + ([self._kept[-1]] if len(self._kept) % 2 == 0 else [])
            self.step *= 2


@dataclass
class ProgressReporter:
    """Counts finished rows from the write descriptors the driver receives and logs a status line every
    `every_seconds`. ETA is by input bytes: rows/s is steady, shard sizes are known."""

    total_bytes: int
    total_shards: int
    every_seconds: float = 30.0
    started: float = field(default_factory=time.monotonic)
    rows: int = 0
    rejected: int = 0
    tokens: int = 0
    # When the last line was logged; None = never, so the first call always logs. (A 0.0 here
    # compared with time.monotonic(), which counts from boot, hid the first line for the
    # first `every_seconds` after a machine booted.)
    last: float | None = None
    timeline: Timeline = field(default_factory=Timeline)

    def add(self, table: pa.Table) -> None:
        """Count a table of finished rows (working columns)."""
        tokens = pc.sum(table.column(C.OUTPUT_TOKENS)).as_py()
        self.add_counts(table.num_rows, table.num_rows - table.column(C.REASON).null_count, int(tokens or 0))

    def add_counts(self, rows: int, rejected: int, tokens: int) -> None:
        """Count finished rows from a write descriptor's counters (the driver sees no rows)."""
        self.rows += rows
        self.rejected += rejected
        self.tokens += tokens
        self.timeline.add(time.monotonic() - self.started, self.rows, self.tokens)

    def maybe_log(self, done_bytes: float, done_shards: int, force: bool = False) -> str | None:
        now = time.monotonic()
        if not force and self.last is not None and now - self.last < self.every_seconds:
            return None
        self.last = now
        line = self.line(done_bytes, done_shards, now)
        log.info(line)
        return line

    def line(self, done_bytes: float, done_shards: int, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.rows / elapsed
        eta = "?"
        if 0 < done_bytes < self.total_bytes:
            eta = _duration(elapsed * (self.total_bytes - done_bytes) / done_bytes)
        elif done_bytes >= self.total_bytes:
            eta = "0s"
        return (
            f"progress: {self.rows} rows ({self.rows - self.rejected} ok, {self.rejected} rejected), "
            f"{done_shards}/{self.total_shards} shards, {rate:.1f} rows/s, "
            f"{self.tokens / elapsed:.0f} tok/s, ETA {eta}"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
