"""The fixed driver scenario the crash tests enumerate (PATTERNS 2.1), on any fsspec store.

Shards A (5 rows, one rejected), B (3 rows) and E (empty). One run: plan, then the workers'
deliveries in a fixed order (a duplicate re-run of A's first batch included), finish (GC),
_summary.json, _SUCCESS. Ids come from counters, so a replay makes the same names.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from fsspec.spec import AbstractFileSystem

from enrich.commit import OutputCommitter
from enrich.config import JobConfig
from enrich.read import ShardInfo
from enrich.write import Lineage
from tests.commit_fixtures import (
    FaultyFS, check_consistent, counter_ids, deliver, finished, listed_files, listed_rows, marker, part_files,
)
from tests.helpers import ADDRESS_FIELDS

SHARDS = [ShardInfo(f"/in/{n}.jsonl", "jsonl", 100, "v1") for n in ("a", "b", "e")]
A, B, E = SHARDS
ROWS = {A.shard_id: 5, B.shard_id: 3, E.shard_id: 0}
TTL = 100.0
_clock = itertools.count(step=10 * TTL)  # each driver starts after the previous one's lease expired


def lineage(fp: str) -> Lineage:
    return Lineage("unused", None, None, "address", "1", fp)


def deliveries(todo: list[ShardInfo]) -> list[tuple[Any, str]]:
    """(rows, attempt id) in the order the driver receives them."""
    plan = [
        (A, lambda: finished(A, [0, 1, 2], rejects={1: "invalid_json"}), "a1"),
        (B, lambda: finished(B, [0, 1, 2], 3), "b1"),
        (A, lambda: finished(A, [0, 1, 2], rejects={1: "invalid_json"}), "a1r"),  # Ray re-ran it
        (E, lambda: marker(E, 0), "e1"),
        (A, lambda: finished(A, [3, 4], 5), "a2"),
    ]
    return [(make(), attempt) for shard, make, attempt in plan if shard in todo]


def run(fs: AbstractFileSystem, fp: str = "fp1", overwrite: bool = False, root: str = "/out",
        run: str = "r", stop_after: int | None = None) -> OutputCommitter:
    """One driver run; `stop_after`: deliveries made before the driver 'dies' (no finish)."""
    cfg = JobConfig.model_validate({"input": "/in", "output": "memory://out", "model": "unused",
                                    "overwrite": overwrite})
    now = next(_clock)
    oc = OutputCommitter(cfg, lineage(fp), list(ADDRESS_FIELDS), storage=(fs, root), run_id=run,
                         ids=counter_ids(f"{run}c"), lease_ttl=TTL, clock=lambda: now)
    todo = oc.plan(SHARDS)
    for n, (rows, attempt) in enumerate(deliveries(todo)):
        if stop_after is not None and n >= stop_after:
            return oc
        deliver(oc, rows, f"{run}-{attempt}")
    oc.finish()
    oc.write_text("_summary.json", f'{{"rows_in": {sum(m.rows_in for m in oc.committed)}}}')
    oc.mark_success()
    return oc


def check_after_crash(fs: AbstractFileSystem, root: str, fps: set[str]) -> None:
    """All or nothing per shard: a manifest lists all of its shard's rows, each once, from
    files that exist, all of one fingerprint (old or new, never a mix)."""
    for sid, rows in check_consistent(fs, root).items():
        assert len(rows) == ROWS[sid], (sid, rows)
        assert len({r[3] for r in rows} | set()) <= 1 and {r[3] for r in rows} <= fps, rows


def check_final(fs: AbstractFileSystem, root: str, golden: dict[str, Any]) -> None:
    """After a successful run: the same rows as the fault-free run, through the manifests;
    no part file that no manifest lists; _SUCCESS and _summary.json present."""
    assert listed_rows(fs, root) == golden
    assert part_files(fs, root) == listed_files(fs, root)
    assert fs.exists(f"{root}/_SUCCESS") and fs.exists(f"{root}/_summary.json")
    assert not fs.exists(f"{root}/_lease.json") and not fs.exists(f"{root}/_overwrite.json")


PRESTATES: dict[str, Callable[[FaultyFS, str], Any]] = {
    "first": lambda fs, root: None,
    # A driver died after B committed and A's first attempt was written; a zombie file too.
    "rerun": lambda fs, root: (run(fs, root=root, run="p", stop_after=3),
                               fs.inner.pipe_file(f"{root}/part-{A.shard_id}-zombie.parquet", b"x")),
    "overwrite": lambda fs, root: run(fs, root=root, run="p"),
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "first": {"fp": "fp1", "overwrite": False, "fps": {"fp1"}},
    "rerun": {"fp": "fp1", "overwrite": False, "fps": {"fp1"}},
    "overwrite": {"fp": "fp2", "overwrite": True, "fps": {"fp1", "fp2"}},
}


def prestate(kind: str, inner: AbstractFileSystem | None = None, root: str = "/out") -> FaultyFS:
    fs = FaultyFS(inner)
    PRESTATES[kind](fs, root)
    fs.ops.clear()
    return fs


def clone(fs: FaultyFS) -> FaultyFS:
    """A fresh in-memory store with the same objects (faults off)."""
    copy = FaultyFS()
    for path, data in fs.files().items():
        copy.inner.pipe_file(path, data)
    return copy
