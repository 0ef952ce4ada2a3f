"""Commit: the driver-side ledger of shards: what to skip, what is open, what is done.

Rows arrive in any order from the stream; each row's shard is known from its lineage. A
shard commits when all its rows have arrived (the reader stamps the shard's row count on its
last chunk) or, at the latest, when the stream ends. Every row is written once: a repeated row
index (a batch re-run after an engine died) is dropped.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from enrich import columns as C
from enrich.config import JobConfig
from enrich.read import BAD_FILE, ShardInfo
from enrich.storage import filesystem, join, remove
from enrich.write import Lineage, ShardManifest, ShardWriter

log = logging.getLogger(__name__)


class OutputExistsError(RuntimeError):
    """The output holds committed shards of another fingerprint (needs --overwrite)."""


@dataclass
class _OpenShard:
    info: ShardInfo
    writer: ShardWriter
    expected: int = -1  # rows in the shard, once the reader has said
    seen: bytearray = field(default_factory=bytearray)  # one flag per row index
    count: int = 0


class OutputCommitter:
    def __init__(self, cfg: JobConfig, lineage: Lineage, output_names: list[str]) -> None:
        self.cfg, self.lineage, self.output_names = cfg, lineage, output_names
        self.fs, self.root = filesystem(cfg.output, cfg.s3_endpoint)
        self.open: dict[str, _OpenShard] = {}
        self.committed: list[ShardManifest] = []
        self.skipped: list[ShardManifest] = []
        self.duplicates_dropped = 0
        self.bad_files: dict[str, str] = {}  # skipped file -> problem

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def manifest(self, shard_id: str) -> ShardManifest | None:
        path = self.path("_manifests", f"{shard_id}.json")
        if not self.fs.exists(path):
            return None
        return ShardManifest.model_validate_json(self.fs.cat_file(path))

    def plan(self, shards: list[ShardInfo]) -> list[ShardInfo]:
        """Shards to process; completed ones (same fingerprint and input version) are skipped."""
        todo = []
        for shard in shards:
            done = None if self.cfg.overwrite else self.manifest(shard.shard_id)
            if done is not None and done.fingerprint != self.lineage.fingerprint:
                raise OutputExistsError(
                    f"{self.cfg.output} holds {shard.url} made with fingerprint "
                    f"{done.fingerprint} (this run: {self.lineage.fingerprint}); "
                    "pass --overwrite to replace it or choose another --output"
                )
            if done is not None and (done.size, done.version) == (shard.size, shard.version):
                self.skipped.append(done)
                continue
            todo.append(shard)
        if todo:
            self._remove(self.path("_SUCCESS"))
        for shard in todo:
            staging = self.path("_staging", shard.shard_id)
            self._remove(staging, recursive=True)
            writer = ShardWriter(self.fs, staging, shard.shard_id, self.cfg.row_group_rows)
            self.open[shard.shard_id] = _OpenShard(shard, writer)
        return todo

    def add(self, table: pa.Table) -> None:
        """Route a batch of finished rows to their shards; commit shards that are complete."""
        for source in pc.unique(table.column(C.SOURCE_FILE)).to_pylist():
            part = table.filter(pc.equal(table.column(C.SOURCE_FILE), source))
            if source in self.bad_files:
                continue  # rows read before the file's problem showed up: dropped with it
            marker = part.filter(pc.equal(part.column(C.REASON), BAD_FILE))
            if marker.num_rows:
                self._drop(source, marker.column(C.MESSAGE)[0].as_py())
                continue
            shard = self._shard_for(source)
            part = self._count(shard, part)
            shard.writer.add(part, self.lineage, self.output_names)
            if shard.expected >= 0 and shard.count == shard.expected:
                self._commit(shard)

    def _drop(self, source: str, message: str) -> None:
        """--on-bad-file skip: forget the shard (no manifest, so a rerun retries it)."""
        shard = self._shard_for(source)
        del self.open[shard.info.shard_id]
        self._remove(self.path("_staging", shard.info.shard_id), recursive=True)
        self.bad_files[source] = message
        log.warning("skipped %s", message)

    def done_bytes(self) -> float:
        """Input bytes finished: committed shards plus the finished share of open ones."""
        done = sum(m.size for m in self.committed)
        for shard in self.open.values():
            if shard.expected > 0:
                done += shard.info.size * shard.count / shard.expected
        return float(done)

    def _shard_for(self, source: str) -> _OpenShard:
        shard = self.open.get(ShardInfo(source, "", 0, "").shard_id)
        if shard is None:
            raise RuntimeError(f"rows from {source}, which is not an open shard of this run")
        return shard

    def _count(self, shard: _OpenShard, part: pa.Table) -> pa.Table:
        """Record the rows of `part`; returns it without rows already received."""
        totals = pc.max(part.column(C.SHARD_ROWS)).as_py()
        if totals is not None and totals >= 0:
            shard.expected = totals
        fresh = []
        for index in part.column(C.ROW_INDEX).to_pylist():
            if index >= len(shard.seen):
                shard.seen.extend(b"\0" * (index + 1 - len(shard.seen) + 1024))
            fresh.append(not shard.seen[index])
            shard.seen[index] = 1
        if not all(fresh):
            # Ray re-runs the batch of a dead engine: delivery is at-least-once, so the sink
            # keeps the first copy of each row and drops repeats (exactly-once output).
            self.duplicates_dropped += fresh.count(False)
            part = part.filter(pa.array(fresh))
        shard.count += part.num_rows
        return part

    def _commit(self, shard: _OpenShard) -> None:
        files, reject_files = shard.writer.close()
        sid = shard.info.shard_id
        if shard.expected < 0:
            shard.expected = shard.count  # the stream ended; an empty shard has no last chunk
        w = shard.writer
        if w.rows_ok + w.rows_rejected != shard.expected:
            raise RuntimeError(
                f"{shard.info.url}: read {shard.expected} rows but wrote "
                f"{w.rows_ok} ok + {w.rows_rejected} rejected"
            )
        # Leftovers of an interrupted commit of this shard would otherwise double its rows.
        for pattern in (f"part-{sid}-*", f"_rejects/part-{sid}-*"):
            for stale in self.fs.glob(self.path(pattern)):
                remove(self.fs, stale)
        staging = self.path("_staging", sid)
        final = [self._publish(f, staging) for f in files]
        final_rejects = [self._publish(f, staging) for f in reject_files]
        manifest = ShardManifest(
            shard_id=sid,
            source=shard.info.url,
            size=shard.info.size,
            version=shard.info.version,
            fingerprint=self.lineage.fingerprint,
            rows_in=shard.expected,
            rows_ok=w.rows_ok,
            rows_rejected=w.rows_rejected,
            rejects_by_reason=dict(sorted(w.rejects_by_reason.items())),
            output_tokens=w.output_tokens,
            files=final,
            reject_files=final_rejects,
        )
        self._write_atomic(self.path("_manifests", f"{sid}.json"), manifest.model_dump_json(indent=2))
        self._remove(self.path("_staging", sid), recursive=True)
        self.committed.append(manifest)
        del self.open[sid]
        log.info("committed %s: %d ok, %d rejected", shard.info.url, w.rows_ok, w.rows_rejected)

    def _publish(self, staged: str, staging: str) -> str:
        relative = posixpath.relpath(staged, staging)
        dest = self.path(relative)
        self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
        self.fs.mv(staged, dest)
        return relative

    def finish(self) -> None:
        """The stream ended: every still-open shard is complete (or empty); commit them."""
        for shard in list(self.open.values()):
            self._commit(shard)
        self._remove(self.path("_staging"), recursive=True)

    def mark_success(self) -> None:
        self._write_atomic(self.path("_SUCCESS"), "")

    def write_text(self, name: str, text: str) -> None:
        self._write_atomic(self.path(name), text)

    def _write_atomic(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp"
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(tmp, text.encode("utf-8"))
        self.fs.mv(tmp, path)  # a rename locally; on S3 readers only ever see whole objects

    def _remove(self, path: str, recursive: bool = False) -> None:
        remove(self.fs, path, recursive)
