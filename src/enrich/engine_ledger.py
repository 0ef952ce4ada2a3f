"""The run's engine ledger: one small named Ray actor that every engine actor reports to.

Engine actors restart without limit (`max_restarts=-1`), so a 70-hour run survives churn; the
ledger is what bounds it: it counts engine deaths per hour (reported ones and, at the restart,
engines killed from outside) and, once the budget is spent, fails the dying engine's batch and
refuses further starts with a message naming the cause. (Consecutive start-up failures are
bounded by Ray Data's own counter, set from the config in `engine_stage.set_start_failure_budget`.)
It also remembers which rows were in flight when an engine died,
so a row that kills the engine every time (a poison row) is isolated instead of spending the
whole budget (see `engine_feed`), and it collects each engine's occupancy for `_summary.json`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

HOUR = 3600.0
CONVICTED = -1  # a row's level once it killed the engine while running alone
KILLED = "the engine actor's process died without a report (killed: OOM killer, SIGKILL, node loss)"


class EngineBudgetSpent(RuntimeError):
    """The run's engine error budget is spent: the job fails with this message."""


class Ledger:
    """Plain class: a Ray actor in a run (`start_ledger`), an object in unit tests."""

    def __init__(self, deaths_per_hour: int, clock: Callable[[], float] = time.time):
        self.deaths_per_hour = deaths_per_hour
        self.clock = clock
        self.deaths: list[tuple[float, str, str]] = []  # (time, engine, cause)
        self.starts: dict[str, int] = defaultdict(int)
        self.was_ready: set[str] = set()
        self.death_reported: set[str] = set()
        self.start_failures = 0
        self.last_cause: dict[str, str] = {}
        self.in_flight_deaths: dict[str, int] = defaultdict(int)  # row key -> deaths it was in flight for
        self.solo_deaths: dict[str, int] = defaultdict(int)  # row key -> deaths while alone in the engine
        self.stats: dict[str, dict[str, Any]] = {}  # per engine lifetime ("<engine>#<start>")
        self.open: dict[str, int] = defaultdict(int)  # batches an engine is running
        self.rerun_batches = 0  # batches a death cut short: Ray runs them again
        self.spent: str | None = None
        self.live: set[str] = set()  # engines ready and not yet stopped (or reported dead)

    def admit_start(self, engine: str) -> str | None:
        """Called first in an engine actor's setup; a message means: do not start, fail the job.
        (Consecutive start-up failures are bounded by Ray Data: `set_start_failure_budget`.)"""
        if self.spent:
            return self.spent
        if engine in self.was_ready and engine not in self.death_reported:
            self._death(engine, KILLED)  # Ray restarted a ready engine that could not report
            if self.spent:
                return self.spent
        self.death_reported.discard(engine)
        self.starts[engine] += 1
        return None

    def start_failed(self, engine: str, cause: str) -> None:
        self.start_failures += 1
        self.last_cause[engine] = cause

    def ready(self, engine: str) -> None:
        self.was_ready.add(engine)
        self.live.add(engine)

    def stopped(self, engine: str) -> None:
        """The engine actor shut its engine down (the pool is done with it)."""
        self.live.discard(engine)

    def live_engines(self) -> int:
        return len(self.live)

    def engine_died(self, engine: str, cause: str, in_flight: list[str]) -> str | None:
        """A dead engine reports the rows it was running; a message means the budget is spent."""
        self.death_reported.add(engine)
        self.live.discard(engine)
        for key in in_flight:
            self.in_flight_deaths[key] += 1
            if len(in_flight) == 1:
                self.solo_deaths[key] += 1
        self._death(engine, cause)
        return self.spent

    def _death(self, engine: str, cause: str) -> None:
        self.rerun_batches += self.open.pop(engine, 0)
        now = self.clock()
        self.deaths.append((now, engine, cause))
        recent = [d for d in self.deaths if now - d[0] < HOUR]
        if len(recent) > self.deaths_per_hour:
            self.spent = (
                f"{len(recent)} engine deaths in the last hour exceed the budget "
                f"(max_engine_deaths_per_hour={self.deaths_per_hour}); last cause: {cause}"
            )

    def levels(self, keys: list[str]) -> dict[str, int]:
        """Rows that were in flight at an engine death: key -> deaths, or CONVICTED for a row that
        killed the engine while alone in it after an earlier death (so not by coincidence)."""
        out = {}
        for key in keys:
            deaths = self.in_flight_deaths.get(key, 0)
            if deaths:
                out[key] = CONVICTED if self.solo_deaths.get(key, 0) and deaths >= 2 else deaths
        return out

    def batch_started(self, engine: str) -> None:
        self.open[engine] += 1

    def report_stats(self, engine: str, stats: dict[str, Any]) -> None:
        """A batch is done; `stats`: the engine's occupancy so far (this lifetime)."""
        self.open[engine] = max(0, self.open[engine] - 1)
        self.stats[f"{engine}#{self.starts[engine]}"] = stats

    def open_batches(self) -> int:
        return sum(self.open.values())

    def summary(self) -> dict[str, Any]:
        engines = dict(self.stats)
        weights = [s["active_seconds"] for s in engines.values()]
        mean = (
            sum(s["occupancy"] * s["active_seconds"] for s in engines.values()) / sum(weights)
            if sum(weights) > 0 else None
        )
        return {
            "engines": engines,
            "occupancy": round(mean, 4) if mean is not None else None,
            "idle_seconds": round(sum(s["idle_seconds"] for s in engines.values()), 2),
            "engine_deaths": len(self.deaths),
            "death_causes": sorted({cause for _, _, cause in self.deaths}),
            "restarts": sum(max(0, n - 1) for n in self.starts.values()),
            "rerun_batches": self.rerun_batches,
            "start_failures": self.start_failures,
            "start_failure_causes": sorted(set(self.last_cause.values())),
            "poison_rows": sorted(k for k in self.in_flight_deaths if self.levels([k]).get(k) == CONVICTED),
            "budget_spent": self.spent,
        }


class LedgerClient:
    """An engine actor's view of the ledger: a named actor, a local object, or a private one."""

    def __init__(self, target: str | Ledger | None, deaths_per_hour: int) -> None:
        self.handle: Any = None
        if isinstance(target, str):
            import ray

            self.handle = ray.get_actor(target)
            self.local: Ledger | None = None
        else:
            self.local = target or Ledger(deaths_per_hour)

    def call(self, method: str, *args: Any, wait: bool = True, timeout: float = 60) -> Any:
        if self.local is not None:
            return getattr(self.local, method)(*args)
        import ray

        ref = getattr(self.handle, method).remote(*args)
        return ray.get(ref, timeout=timeout) if wait else None


_driver: dict[str, Any] = {}


def start_ledger(deaths_per_hour: int) -> str:
    """Start this run's ledger (driver side); returns its name for the engine actors."""
    import ray

    name = f"enrich-engine-ledger-{uuid.uuid4().hex[:12]}"
    actor_cls = ray.remote(num_cpus=0, max_restarts=0)(Ledger)
    _driver["handle"] = actor_cls.options(name=name).remote(deaths_per_hour)
    _driver["name"] = name
    return name


def run_ledger() -> Any | None:
    """This driver's ledger actor handle (tests watch it), or None."""
    return _driver.get("handle")


# An engine's slowest clean stop on a busy node: 10 s for its output handler, vLLM's shutdown,
# 15 s for its processes (Ray gives an exiting actor 30 s).
ENGINE_STOP_TIMEOUT = 40.0


def wait_for_engines_to_stop(timeout: float = ENGINE_STOP_TIMEOUT) -> bool:
    """Once the engine stage is done, Ray Data lets its actors go and each shuts its engine down
    (`EngineActor.shutdown`, a few seconds). Wait for that before the run ends: a driver that
    exits first kills the engines mid-shutdown (vLLM and multiprocessing tracebacks). False when
    some engine did not report within `timeout` (one killed at the end never will)."""
    handle = _driver.get("handle")
    if handle is None:
        return True
    import ray

    deadline = time.monotonic() + timeout
    while ray.get(handle.live_engines.remote(), timeout=60):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def engine_report() -> dict[str, Any] | None:
    """The run's engine record (occupancy per engine, idle time, deaths, restarts, poison rows),
    for `_summary.json`; None when no ledger ran in this driver."""
    handle = _driver.get("handle")
    if handle is None:
        return None
    import ray

    return ray.get(handle.summary.remote(), timeout=60)
