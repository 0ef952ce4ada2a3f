"""Every crash point of the commit protocol, enumerated (PATTERNS 2.1, SQLite's do_ioerr_test).

For each scenario (first run, rerun after a crashed run, --overwrite of a finished output):
record the fault-free trace of N mutating object-store operations; then for every k < N and
both modes (crash before op k is applied, or right after), start from the same pre-state,
crash at op k, check that every shard is all-or-nothing, recover with a fault-free rerun of
the same command, and compare the output (read through the manifests) with the fault-free
one. Plus two-crash runs (a second crash during recovery). No sampling.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.commit_fixtures import Crash
from tests.crash_scenario import SCENARIOS, check_after_crash, check_final, clone, listed_rows, prestate, run

ROOT = "/out"


def _golden(kind: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    fs = prestate(kind)
    spec = SCENARIOS[kind]
    run(fs, spec["fp"], spec["overwrite"], run="g")
    return list(fs.ops), listed_rows(fs, ROOT)


def _crash_then_recover(kind: str, k: int, mode: str, trace: list[tuple[str, str]], golden: dict[str, Any],
                        second: tuple[int, str] | None = None) -> int:
    spec = SCENARIOS[kind]
    fs = prestate(kind)
    fs.crash_at, fs.mode = k, mode
    with pytest.raises(Crash):
        run(fs, spec["fp"], spec["overwrite"], run="g")
    assert [op for op, _ in fs.ops] == [op for op, _ in trace[: k + 1]], "replay diverged"
    assert [p for _, p in fs.ops] == [p for _, p in trace[: k + 1]]
    check_after_crash(fs, ROOT, spec["fps"])
    recovery = clone(fs)
    runs = 1
    if second is not None:  # the recovery crashes too, then a second recovery
        recovery.crash_at, recovery.mode = second
        try:
            run(recovery, spec["fp"], spec["overwrite"], run="h")
        except Crash:
            check_after_crash(recovery, ROOT, spec["fps"])
            recovery = clone(recovery)
            runs += 1
        else:
            recovery.crash_at = None
    run(recovery, spec["fp"], spec["overwrite"], run="h")
    check_final(recovery, ROOT, golden)  # rows carry no attempt ids: comparable across runs
    return runs + 1


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_every_crash_point(kind: str) -> None:
    trace, golden = _golden(kind)
    assert len(trace) >= 8, trace  # the scenario really writes, commits and cleans up
    assert sum(len(v) for v in golden.values()) == 8
    tried = 0
    for k in range(len(trace)):
        for mode in ("before", "after"):
            _crash_then_recover(kind, k, mode, trace, golden)
            tried += 1
    print(f"{kind}: {len(trace)} ops, {tried} crash points tried, each recovered")  # noqa: T201
    assert tried == 2 * len(trace)


@pytest.mark.parametrize("kind", list(SCENARIOS))
def test_two_crashes(kind: str) -> None:
    """A crash, then a crash during the recovery, then a recovery: still the same output."""
    trace, golden = _golden(kind)
    pairs = 0
    for k in range(0, len(trace), 5):
        for k2 in range(0, 30, 5):
            _crash_then_recover(kind, k, "after", trace, golden, second=(k2, "before" if k2 % 8 else "after"))
            pairs += 1
    assert pairs >= 18
