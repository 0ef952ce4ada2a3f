"""Model-based test of the commit protocol (PATTERNS 2.3): hypothesis drives random sequences
of deliveries, re-deliveries (Ray re-runs, late duplicates), crossing deliveries, zombie
files, crashes at the k-th object-store operation, reruns, --overwrite, changed inputs and
finishes, and checks the invariants after every step on the in-memory object store."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from enrich.commit import IncompleteShardsError, OutputCommitter, OutputExistsError
from enrich.config import JobConfig
from enrich.read import ShardInfo
from enrich.write import Lineage
from tests.commit_fixtures import (
    Crash, FaultyFS, check_consistent, counter_ids, deliver, finished, listed_files, part_files, write,
)
from tests.helpers import ADDRESS_FIELDS

ROOT = "/out"
ROWS = {"a": 4, "b": 3, "e": 0}  # b only through deliver_chunk: most steps hit a
TTL = 100.0


class CommitMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fs = FaultyFS()
        self.versions = dict.fromkeys(ROWS, 1)
        self.driver: OutputCommitter | None = None
        self.fp = "fp1"
        self.runs = itertools.count()
        self.now = 0.0
        self.ever_committed: set[str] = set()  # shard ids that had a manifest once
        self.clean_since_success = False

    # ------------------------------------------------------------ helpers
    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(f"/in/{n}.jsonl", "jsonl", 100, f"v{self.versions[n]}") for n in ROWS]

    def shard(self, name: str) -> ShardInfo:
        return next(s for s in self.shards() if s.url == f"/in/{name}.jsonl")

    def _guard(self, action: Any) -> Any:
        """Run a driver action; a Crash kills the driver (only the store survives)."""
        try:
            return action()
        except Crash:
            self.driver = None
            self.fs.crash_at = self.fs.crash_on = None
            return None

    # ------------------------------------------------------------ rules
    @initialize()
    def first_run(self) -> None:
        self.start_run(False, False, None)

    @precondition(lambda self: self.driver is None)
    @rule(overwrite=st.booleans(), new_fp=st.booleans(), changed=st.sampled_from([None, "a", "e"]))
    def start_run(self, overwrite: bool, new_fp: bool, changed: str | None) -> None:
        if new_fp:
            self.fp = "fp2" if self.fp == "fp1" else "fp1"
        if changed:
            self.versions[changed] += 1  # the input file changed since it was committed
        self.now += 10 * TTL  # the dead driver's lease has expired
        now, run = self.now, f"r{next(self.runs)}"
        cfg = JobConfig.model_validate({"input": "/in", "output": "memory://out", "model": "m", "overwrite": overwrite})
        oc = OutputCommitter(cfg, Lineage("m", None, None, "address", "1", self.fp), list(ADDRESS_FIELDS),
                             storage=(self.fs, ROOT), run_id=run, ids=counter_ids(f"{run}c"), lease_ttl=TTL,
                             clock=lambda: now)
        try:
            if self._guard(lambda: oc.plan(self.shards())) is not None:
                self.driver = oc
        except OutputExistsError:
            assert not overwrite  # refusing another fingerprint is right; nothing changed

    @precondition(lambda self: self.driver is not None)
    @rule(name=st.sampled_from(["a", "a", "e"]), lo=st.integers(0, 3), n=st.integers(1, 3), end=st.booleans())
    def deliver_range(self, name: str, lo: int, n: int, end: bool) -> None:
        """A worker delivers rows [lo, lo+n) of a shard (maybe again, maybe crossing earlier
        ones, maybe after the shard committed), with or without the end-of-shard count."""
        shard, total = self.shard(name), ROWS[name]
        rows = list(range(min(lo, total), min(lo + n, total)))
        if not rows and not end:
            return
        oc = self.driver
        assert oc is not None
        if shard.shard_id not in oc.ledgers and shard.shard_id not in oc.done_ids:
            return  # not a shard of this run (skipped): the reader would not deliver it
        table = finished(shard, rows, total, rejects={1: "invalid_json"}, end=end)
        self._guard(lambda: deliver(oc, table, f"{oc.run_id}-{next(self.runs)}"))

    @precondition(lambda self: self.driver is not None)
    @rule(name=st.sampled_from(list(ROWS)), half=st.sampled_from([0, 1]))
    def deliver_chunk(self, name: str, half: int) -> None:
        """The common case: a shard in two fixed chunks, the end marker with the second."""
        self.deliver_range(name, 2 * half, 2, half == 1)

    @precondition(lambda self: self.driver is not None)
    @rule(crash_on=st.sampled_from([None, None, "_manifests/", "part-"]), mode=st.sampled_from(["before", "after"]))
    def deliver_all(self, crash_on: str | None, mode: str) -> None:
        """Every shard of the run, whole, one batch each; maybe the process dies at the first
        manifest write (the commit point) or part file write on the way."""
        self.fs.crash_on, self.fs.mode = crash_on, mode
        for name in ROWS:
            if self.driver is not None:
                self.deliver_range(name, 0, 4, True)
        self.fs.crash_on = None

    @precondition(lambda self: self.driver is not None)
    @rule(end=st.booleans())
    def deliver_straddling(self, end: bool) -> None:
        """A retried batch bundled differently: rows 1-2 of a, across both fixed chunks."""
        self.deliver_range("a", 1, 2, end)

    @rule(name=st.sampled_from(["a", "b"]))
    def zombie_file(self, name: str) -> None:
        """A file no descriptor will ever report (a worker that died after writing)."""
        shard = self.shard(name)
        oc = self.driver or OutputCommitter(
            JobConfig.model_validate({"input": "/in", "output": "memory://out", "model": "m"}),
            Lineage("m", None, None, "address", "1", "zz"), list(ADDRESS_FIELDS), storage=(self.fs, ROOT))
        faults, self.fs.crash_at = self.fs.crash_at, None
        write(oc, finished(shard, [0, 1]), f"zombie{next(self.runs)}")
        self.fs.crash_at = faults
        self.clean_since_success = False

    @precondition(lambda self: self.driver is not None)
    @rule(k=st.integers(0, 12), mode=st.sampled_from(["before", "after"]))
    def arm_crash(self, k: int, mode: str) -> None:
        """The process will die at the k-th object-store operation from now."""
        self.fs.crash_at, self.fs.mode = len(self.fs.ops) + k, mode

    @precondition(lambda self: self.driver is not None)
    @rule()
    def finish(self) -> None:
        oc = self.driver
        assert oc is not None
        open_before = {oc.infos[s].url for s in oc.ledgers}

        def end() -> bool:
            try:
                oc.finish()
            except IncompleteShardsError as exc:
                assert open_before and all(u in str(exc) for u in {oc.infos[s].url for s in oc.ledgers})
                return False
            oc.write_text("_summary.json", "{}")
            oc.mark_success()
            return True

        if self._guard(end):
            assert oc.ledgers == {}
            self.clean_since_success = True
        self.driver = None
        self.fs.crash_at = self.fs.crash_on = None  # an armed crash dies with the driver

    # ------------------------------------------------------------ invariants
    @invariant()
    def every_manifest_lists_its_whole_shard_once(self) -> None:
        names = {ShardInfo(f"/in/{n}.jsonl", "", 0, "").shard_id: n for n in ROWS}
        rows = check_consistent(self.fs, ROOT)  # listed files exist; rows 0..n-1 each once
        for sid, shard_rows in rows.items():
            assert len(shard_rows) == ROWS[names[sid]]
            assert len({r[3] for r in shard_rows}) <= 1  # one fingerprint per shard, never a mix
        assert self.ever_committed <= set(rows), "a committed shard lost its manifest"
        self.ever_committed |= set(rows)

    @invariant()
    def after_success_only_listed_part_files(self) -> None:
        if self.clean_since_success and self.fs.exists(f"{ROOT}/_SUCCESS"):
            assert part_files(self.fs, ROOT) == listed_files(self.fs, ROOT)


CommitMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=20, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_commit_protocol_model = CommitMachine.TestCase
