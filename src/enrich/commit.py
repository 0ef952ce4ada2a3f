"""Commit: the driver's ledger of one task's output. Workers write; the driver only commits.

Protocol (Delta/Iceberg-style single-file commits, Spark-style first attempt wins):
  1. Workers write each (task, shard) group of a batch as attempt-unique files and return a
     Descriptor (row ranges, files, counters). Nothing points at those files yet.
  2. The ledger accepts a descriptor whose rows are new and trashes a duplicate (ledger.py).
  3. A shard whose delivered rows equal the reader's count commits with ONE atomic write of
     `_manifests/<shard>.json` (a single PUT on S3) carrying a commit id chosen beforehand.
  4. Only after that write landed are superseded and trash files deleted; at the end every
     `part-*` file no manifest lists is deleted (crashed attempts, zombies), then _SUCCESS.
A crash anywhere leaves every shard with its old manifest and files, or its new ones.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Iterable

from fsspec.spec import AbstractFileSystem

from enrich.config import JobConfig
from enrich.lease import DEFAULT_TTL, Lease, is_local, put
from enrich.ledger import Delivery, ShardLedger
from enrich.manifests import ConcurrentWriterError, put_manifest, read_manifest, read_manifests
from enrich.quality import QualityCounters
from enrich.read import ShardInfo
from enrich.storage import filesystem, join
from enrich.write import Descriptor, Lineage, ShardManifest

log = logging.getLogger(__name__)
OVERWRITE = "_overwrite.json"  # an --overwrite in progress: its fingerprint and runs
# The names workers give attempt files: the clean-up deletes no other file.
PART = re.compile(r"part-[0-9a-f]{16}-.+\.parquet$")


class OutputExistsError(RuntimeError):
    """The output holds committed shards of another fingerprint (needs --overwrite)."""


class StaleShardsError(OutputExistsError):
    """The output holds shards of input files this run does not list (renamed or removed):
    their rows would stay in the output beside this run's, so the run refuses to start."""


class IncompleteShardsError(RuntimeError):
    """The stream ended before every row of some shards was delivered: they are not committed."""


def new_id() -> str:
    return uuid.uuid4().hex[:12]


class OutputCommitter:
    def __init__(
        self, cfg: JobConfig, lineage: Lineage, output_names: list[str],
        storage: tuple[AbstractFileSystem, str] | None = None, run_id: str | None = None,
        ids: Callable[[], str] = new_id, lease_ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.lineage, self.output_names = cfg, lineage, output_names
        self.fs, self.root = storage or filesystem(cfg.output, cfg.s3_endpoint)
        self.run_id = run_id or ids()
        self.ids = ids
        self.lease = Lease(self.fs, self.root, self.run_id, lease_ttl, clock)
        self.infos: dict[str, ShardInfo] = {}
        self.ledgers: dict[str, ShardLedger] = {}
        self.old: dict[str, ShardManifest] = {}  # shards being redone: their current manifest
        self.committed: list[ShardManifest] = []
        self.skipped: list[ShardManifest] = []
        self.listed: set[str] = set()  # files every manifest of the output lists
        self.done_ids: set[str] = set()
        self.bad_files: dict[str, str] = {}  # skipped file -> problem
        self.duplicates_dropped = 0
        self.late_dropped = 0
        self.rows_delivered = 0
        self._done_bytes = 0.0

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    # ------------------------------------------------------------ planning
    def existing(self) -> dict[str, ShardManifest]:
        """Every manifest of the output: one listing plus one concurrent read of them all."""
        return {m.shard_id: m for m in read_manifests(self.fs, self.root)}

    def manifest(self, shard_id: str) -> ShardManifest | None:
        return read_manifest(self.fs, self.root, shard_id)

    def plan(self, shards: list[ShardInfo]) -> list[ShardInfo]:
        """Take the lease; shards to process (a manifest of this fingerprint and input version
        means done, unless overwriting); nothing is deleted here."""
        self.lease.acquire(self.cfg.output)
        existing = self.existing()
        self._refuse_stale(existing, shards)
        resumed = self._overwrite_runs() if self.cfg.overwrite else set()
        todo = []
        for shard in shards:
            done = existing.get(shard.shard_id)
            if done is not None and done.fingerprint != self.lineage.fingerprint and not self.cfg.overwrite:
                raise OutputExistsError(
                    f"{self.cfg.output} holds {shard.url} made with fingerprint "
                    f"{done.fingerprint} (this run: {self.lineage.fingerprint}); "
                    "pass --overwrite to replace it or choose another --output"
                )
            replaced = self.cfg.overwrite and done is not None and done.run_id in resumed
            if done is not None and (not self.cfg.overwrite or replaced) and done.fingerprint == self.lineage.fingerprint \
                    and (done.size, done.version) == (shard.size, shard.version):
                self.skipped.append(done)  # done, or already replaced by this interrupted overwrite
                continue
            todo.append(shard)
            if done is not None:
                self.old[shard.shard_id] = done
            self.infos[shard.shard_id] = shard
            self.ledgers[shard.shard_id] = ShardLedger()
        for m in existing.values():
            self.listed.update(m.files + m.reject_files)
        if todo:
            self._remove([self.path("_SUCCESS")])
        return todo

    def _refuse_stale(self, existing: dict[str, ShardManifest], shards: list[ShardInfo]) -> None:
        """A committed shard whose input is gone from this run (renamed, moved, deleted) would
        keep its rows in the output next to the new ones: a renamed file would count twice."""
        current = {s.shard_id for s in shards}
        stale = sorted(m.source for sid, m in existing.items() if sid not in current)
        if stale:
            more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
            raise StaleShardsError(
                f"{self.cfg.output} holds rows of {stale[0]}{more}, which this run's input does not list "
                "(renamed or removed?); they would stay beside this run's rows. Choose another --output, "
                "or delete those shards' _manifests/<shard>.json files first"
            )

    def _overwrite_runs(self) -> set[str]:
        """Runs of an interrupted --overwrite with this fingerprint (from `_overwrite.json`),
        whose commits a resumed --overwrite keeps; this run joins them before it commits."""
        path = self.path(OVERWRITE)
        try:
            marker = json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            marker = {}
        runs = set(marker.get("runs", [])) if marker.get("fingerprint") == self.lineage.fingerprint else set()
        body = {"fingerprint": self.lineage.fingerprint, "runs": sorted(runs | {self.run_id})}
        put(self.fs, path, json.dumps(body).encode("utf-8"))
        return runs

    # ------------------------------------------------------------ the stream
    def add(self, d: Descriptor) -> None:
        """Take one worker's descriptor; commit the shard when its rows are all delivered."""
        self.lease.renew()
        ledger = self.ledgers.get(d.shard_id)
        files = [f.path for f in d.files + d.reject_files]
        if ledger is None:
            if d.shard_id in self.done_ids or d.source in self.bad_files:
                self.late_dropped += 1  # a late duplicate of a finished shard: its files are trash
                return
            raise RuntimeError(f"rows from {d.source}, which is not an open shard of this run")
        if d.bad_file is not None:  # --on-bad-file skip: forget the shard; a rerun retries it
            del self.ledgers[d.shard_id]
            self.bad_files[d.source] = d.bad_file
            log.warning("skipped %s", d.bad_file)
            return
        if d.shard_rows >= 0:
            ledger.expected = d.shard_rows
        verdict = ledger.offer(Delivery(d.attempt, [tuple(r) for r in d.ranges], files, d))
        if verdict == "duplicate":
            self.duplicates_dropped += 1
        elif verdict == "replaced":
            ledger.retry_spares()
        self.rows_delivered += sum(f.rows for f in d.files + d.reject_files) if verdict != "duplicate" else 0
        if ledger.complete:
            self._commit(d.shard_id)

    def done_bytes(self) -> float:
        """Input bytes of shards committed by this run (kept as a running total)."""
        return self._done_bytes

    def _commit(self, sid: str) -> None:
        ledger, info = self.ledgers[sid], self.infos[sid]
        accepted = sorted(ledger.accepted, key=lambda a: a.ranges[0])
        descs: list[Descriptor] = [a.payload for a in accepted]  # type: ignore[misc]
        ok = [f for d in descs for f in d.files]
        bad = [f for d in descs for f in d.reject_files]
        rows_ok, rows_rejected = sum(f.rows for f in ok), sum(f.rows for f in bad)
        if rows_ok + rows_rejected != ledger.expected:  # the writer's files disagree with its ranges
            raise RuntimeError(f"{info.url}: read {ledger.expected} rows but the files hold "
                               f"{rows_ok} ok + {rows_rejected} rejected")
        quality = QualityCounters.total(d.quality for d in descs)
        manifest = ShardManifest(
            shard_id=sid, source=info.url, size=info.size, version=info.version,
            fingerprint=self.lineage.fingerprint, rows_in=ledger.expected, rows_ok=rows_ok,
            rows_rejected=rows_rejected, rejects_by_reason=dict(sorted(quality.rejects_by_reason.items())),
            output_tokens=quality.output_tokens_sum, files=[f.path for f in ok], reject_files=[f.path for f in bad],
            file_rows={f.path: f.rows for f in ok + bad}, file_bytes={f.path: f.bytes for f in ok + bad},
            quality=quality, commit_id=self.ids(), run_id=self.run_id,
        )
        old = self.old.get(sid)
        self._put_manifest(manifest, old)
        # The commit landed: only now may the replaced and unlisted files go.
        now_listed = set(manifest.files + manifest.reject_files)
        garbage = ledger.unlisted()
        if old is not None:
            superseded = [f for f in old.files + old.reject_files if f not in now_listed]
            self.listed.difference_update(superseded)
            garbage += superseded
        self.listed.update(now_listed)
        self._remove([self.path(f) for f in garbage])
        self.old.pop(sid, None)
        del self.ledgers[sid]
        self.done_ids.add(sid)
        self.committed.append(manifest)
        self._done_bytes += info.size
        log.info("committed %s: %d ok, %d rejected", info.url, rows_ok, rows_rejected)

    def _put_manifest(self, manifest: ShardManifest, old: ShardManifest | None) -> None:
        put_manifest(self.fs, self.root, manifest, old, self.run_id)

    # ------------------------------------------------------------ the end
    def finish(self) -> None:
        """The stream ended: a shard not delivered whole is NOT committed (the run fails naming
        it); then every part file no manifest lists is deleted."""
        incomplete = []
        for sid, ledger in list(self.ledgers.items()):
            if ledger.complete:
                self._commit(sid)
            else:
                have = "unknown (no end-of-shard count arrived)" if ledger.expected < 0 else ledger.expected
                incomplete.append(f"{self.infos[sid].url} (rows expected: {have}, delivered: {ledger.rows}, "
                                  f"missing ranges: {ledger.missing()[:5]})")
        if incomplete:
            raise IncompleteShardsError(
                f"{len(incomplete)} shard(s) did not receive all their rows and were not committed "
                f"(a rerun redoes them): " + "; ".join(incomplete[:20])
            )
        self.gc()

    def gc(self) -> None:
        """Delete every part file no manifest lists (crashed, duplicate or zombie attempts)."""
        found: list[str] = []
        for folder in (self.root, self.path("_rejects")):
            try:
                listing = self.fs.ls(folder, detail=False, refresh=True)
                found += [p for p in listing if PART.match(posixpath.basename(p))]
            except FileNotFoundError:
                continue
        base = self.root.rstrip("/") + "/"
        unlisted = [p for p in found if _relative(p, base) not in self.listed]
        if unlisted:
            log.info("removing %d part files no manifest lists", len(unlisted))
        self._remove(unlisted)

    def mark_success(self) -> None:
        # The overwrite (if any) is complete: a later --overwrite must redo everything.
        self._remove([self.path(OVERWRITE)])
        put(self.fs, self.path("_SUCCESS"), b"")
        self.lease.release()

    def write_text(self, name: str, text: str) -> None:
        put(self.fs, self.path(name), text.encode("utf-8"))

    def _remove(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        if not paths:
            return
        if is_local(self.fs):
            import os

            for p in paths:
                if os.path.lexists(p):
                    os.remove(p)
            return
        for p in paths:  # one request each (S3 batch deletes exist but fail partially)
            try:
                self.fs.rm_file(p)
            except FileNotFoundError:
                pass


def _relative(path: str, base: str) -> str:
    stripped = path.split("://", 1)[-1]
    base = base.split("://", 1)[-1]
    return stripped[len(base):] if stripped.startswith(base) else stripped.lstrip("/")
