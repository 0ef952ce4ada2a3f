"""How full an engine is kept: time-weighted running sequences / max_num_seqs, and idle time.

Two sources, the better one wins: vLLM's scheduler stats (the running set, per engine step,
read through a custom stat logger: vLLM >= 0.11 calls `record(scheduler_stats=...)` after each
step's outputs), else the actor's own count of requests in flight, capped at max_num_seqs
(an upper bound: requests waiting in the engine's queue count as running).
All methods run on the engine actor's event loop thread; no locking.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Occupancy:
    """Integrates the engine's running set over the time the engine has work or waits for it
    between batches (from its first request to its last answer)."""

    def __init__(self, max_num_seqs: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_num_seqs = max(1, max_num_seqs)
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget the warm-up: the measure starts with the first batch's request."""
        self.in_flight = 0
        self.requests = 0
        self.first: float | None = None
        self.last: float | None = None  # the last time the engine's running set changed
        self.idle_since: float | None = None
        self.idle_seconds = 0.0
        self.seq_seconds = 0.0  # integral of running sequences over time
        self.running = 0
        self.scheduler_seen = False

    def _advance(self, now: float) -> None:
        if self.last is not None:
            self.seq_seconds += self.running * (now - self.last)
        self.last = now

    def submitted(self) -> None:
        now = self.clock()
        if self.first is None:
            self.first = now
        if self.idle_since is not None:  # the engine waited for work between batches
            self.idle_seconds += now - self.idle_since
            self.idle_since = None
        self._advance(now)
        self.in_flight += 1
        self.requests += 1
        if not self.scheduler_seen:
            self.running = min(self.in_flight, self.max_num_seqs)

    def finished(self) -> None:
        now = self.clock()
        self._advance(now)
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle_since = now
            self.running = 0  # no request left: nothing runs, whatever the last stats said
        elif not self.scheduler_seen:
            self.running = min(self.in_flight, self.max_num_seqs)

    def scheduler(self, num_running: int) -> None:
        """The engine's own count after a step (the preferred source)."""
        self._advance(self.clock())
        self.scheduler_seen = True
        self.running = num_running if self.in_flight else 0

    def summary(self) -> dict[str, Any]:
        now = self.clock()
        end = now if self.in_flight else (self.idle_since or now)
        seq_seconds = self.seq_seconds + (self.running * (now - self.last) if self.last else 0.0)
        span = (end - self.first) if self.first is not None else 0.0
        mean = seq_seconds / span if span > 0 else 0.0
        return {
            "occupancy": round(mean / self.max_num_seqs, 4),
            "mean_running": round(mean, 2),
            "max_num_seqs": self.max_num_seqs,
            "active_seconds": round(span, 2),
            "idle_seconds": round(self.idle_seconds, 2),
            "requests": self.requests,
            "source": "scheduler" if self.scheduler_seen else "in_flight",
        }


def stat_logger_factory(occupancy: Occupancy) -> Callable[..., Any]:
    """A vLLM StatLoggerFactory that feeds `occupancy` from the scheduler's stats."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _OccupancyLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                occupancy.scheduler(scheduler_stats.num_running_reqs)

        def log_engine_initialized(self) -> None:
            pass

    return _OccupancyLogger
