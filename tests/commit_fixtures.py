"""Shared pieces of the commit-protocol tests: synthetic finished rows, the worker write step,
a fault-injecting fsspec wrapper (PATTERNS 2.2), and checks of an output through its manifests."""

from __future__ import annotations

import io
import itertools
import json
import posixpath
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractFileSystem

from enrich import columns as C
from enrich.commit import OutputCommitter
from enrich.read import SHARD_END, ShardInfo
from enrich.write import Descriptor, Lineage, write_attempt
from tests.helpers import ADDRESS_FIELDS, stage_columns


# ---------------------------------------------------------------- rows and deliveries
def finished(
    shard: ShardInfo, indexes: list[int], total: int = -1, rejects: dict[int, str] | None = None,
    zips: list[Any] | None = None, end: bool | None = None,
) -> pa.Table:
    """Rows as validate_batch outputs them: input + working + the six address columns, plus
    the reader's end-of-shard marker row (SHARD_ROWS = total) when the batch holds the last
    row (or `end=True`); `rejects` maps row index -> reason."""
    rejects = rejects or {}
    n = len(indexes)
    bad = [i in rejects for i in indexes]
    cols: dict[str, pa.Array] = {
        "order_id": pa.array([f"{shard.url[-7:]}#{i}" for i in indexes], pa.string()),
        "text": pa.array([f"地址{i}" for i in indexes], pa.string()),
    }
    if zips is not None:
        cols["zip"] = pa.array(zips)
    cols |= {
        C.ROW_ID: pa.array([f"{shard.shard_id}-{i}" for i in indexes], pa.string()),
        C.SOURCE_FILE: pa.array([shard.url] * n, pa.string()),
        C.ROW_INDEX: pa.array(indexes, pa.int64()),
        C.SHARD_ROWS: pa.array([-1] * n, pa.int64()),
        C.TEXT: pa.array([f"地址{i}" for i in indexes], pa.string()),
        C.REASON: pa.array([rejects.get(i) for i in indexes], pa.string()),
        C.MESSAGE: pa.array([f"why {i}" if b else None for i, b in zip(indexes, bad)], pa.string()),
    }
    table = pa.table(cols | stage_columns(indexes, bad))
    if end or (end is None and total >= 0 and total - 1 in indexes) or (end is None and total == 0):
        table = pa.concat_tables([table, marker(shard, total, table.schema)])
    return table


def marker(shard: ShardInfo, total: int, schema: pa.Schema | None = None) -> pa.Table:
    """The reader's end-of-shard row (every other column null)."""
    values = {C.ROW_ID: f"{shard.shard_id}--1", C.SOURCE_FILE: shard.url, C.ROW_INDEX: -1,
              C.SHARD_ROWS: total, C.REASON: SHARD_END, C.MESSAGE: None}
    if schema is None:
        kind = lambda v: pa.string() if v is None or isinstance(v, str) else pa.int64()  # noqa: E731
        return pa.table({k: pa.array([v], kind(v)) for k, v in values.items()})
    return pa.table({f.name: pa.array([values.get(f.name)], f.type) for f in schema}, schema=schema)


def counter_ids(prefix: str = "id") -> Callable[[], str]:
    """A deterministic id factory: replays make the same names (PATTERNS 2.2 pitfall 2)."""
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):04d}"


def write(oc: OutputCommitter, table: pa.Table, attempt: str) -> list[Descriptor]:
    """The worker side: one attempt's files per shard group of `table`, as the sink writes."""
    out = []
    sources = table.column(C.SOURCE_FILE).to_pylist()
    for source in dict.fromkeys(sources):
        group = table.filter(pa.array([s == source for s in sources]))
        out.append(write_attempt(oc.fs, oc.root, "address", group, oc.lineage, list(ADDRESS_FIELDS), attempt))
    return out


def deliver(oc: OutputCommitter, table: pa.Table, attempt: str) -> list[Descriptor]:
    """Write, then hand the descriptors to the committer (what the driver loop does)."""
    descriptors = write(oc, table, attempt)
    for d in descriptors:
        oc.add(d)
    return descriptors


# ---------------------------------------------------------------- fault injection
class Crash(BaseException):
    """The process died. A BaseException, so no `except Exception` in the code can swallow it."""


class FaultyFS(AbstractFileSystem):
    """An object store (MemoryFileSystem with its own store) that counts mutating operations at
    S3 granularity: pipe_file, the close of a write handle (the object appears whole then),
    copy, rm_file; mv is copy + rm. At op number `crash_at` it raises Crash, without applying
    the op ("before") or after applying it ("after"). `ops` records (kind, path) of each op."""

    protocol = "faulty"
    cachable = False
    root_marker = "/"

    def __init__(self, inner: AbstractFileSystem | None = None, crash_at: int | None = None,
                 mode: str = "before") -> None:
        super().__init__()
        if inner is None:
            inner = MemoryFileSystem(skip_instance_cache=True)
            inner.store, inner.pseudo_dirs = {}, [""]  # a private store, not the class-wide one
        self.inner, self.crash_at, self.mode = inner, crash_at, mode
        self.crash_on: str | None = None  # or: crash at the next op whose path contains this
        self.ops: list[tuple[str, str]] = []

    def _op(self, kind: str, path: str, apply: Callable[[], Any]) -> Any:
        k = len(self.ops)
        self.ops.append((kind, path))
        if self.crash_on is not None and self.crash_on in path:
            self.crash_at, self.crash_on = k, None
        if self.crash_at == k and self.mode == "before":
            raise Crash(f"crash before op {k}: {kind} {path}")
        try:
            result = apply()
        except Exception as exc:  # the request failed (e.g. a conditional PUT): nothing applied
            if self.crash_at == k and self.mode == "after":
                raise Crash(f"crash after failed op {k}: {kind} {path}") from exc
            raise
        if self.crash_at == k and self.mode == "after":
            raise Crash(f"crash after op {k}: {kind} {path}")
        return result

    # mutations
    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        self._op("put", path, lambda: self.inner.pipe_file(path, value, mode=mode))

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "r" in mode:
            return self.inner.open(path, mode)
        fs = self

        class _Upload(io.BytesIO):
            def close(self) -> None:
                if not self.closed:
                    data = self.getvalue()
                    super().close()
                    fs.pipe_file(path, data)

        return _Upload()

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._op("copy", path2, lambda: self.inner.cp_file(path1, path2))

    def rm_file(self, path: str) -> None:
        # S3 answers a DELETE of a missing key with 204: not an error.
        self._op("delete", path, lambda: self.inner.exists(path) and self.inner.rm_file(path))

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            targets = self.inner.find(p) if recursive and self.inner.isdir(p) else [p]
            for t in targets:
                self.rm_file(t)

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.cp_file(path1, path2)
        self.rm_file(path1)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass  # an object store has no folders

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass

    # reads
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        return self.inner.ls(path, detail=detail)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.inner.info(path)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        return self.inner.cat_file(path, start=start, end=end)

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.inner.exists(path)

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:
        return self.inner.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail)

    def files(self) -> dict[str, bytes]:
        """Every object and its bytes (for 'nothing changed' comparisons)."""
        return {p: self.inner.cat_file(p) for p in self.inner.find("/")}


# ---------------------------------------------------------------- reading back
def listed_rows(fs: AbstractFileSystem, root: str) -> dict[str, list[tuple[Any, ...]]]:
    """shard_id -> its rows read through its manifest's files: (row index, ok?, values)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        names = [p for p in fs.ls(posixpath.join(root, "_manifests"), detail=False) if p.endswith(".json")]
    except FileNotFoundError:
        return out
    afs = PyFileSystem(FSSpecHandler(fs))
    for name in sorted(names):
        m = json.loads(fs.cat_file(name))
        rows: list[tuple[Any, ...]] = []
        for rel in m["files"]:
            t = pq.read_table(posixpath.join(root, rel), filesystem=afs)
            rows += [(r["enrich_row_index"], "ok", r["province"], r["enrich_fingerprint"]) for r in t.to_pylist()]
        for rel in m["reject_files"]:
            t = pq.read_table(posixpath.join(root, rel), filesystem=afs)
            rows += [(r["row_index"], r["reason"], None, r["enrich_fingerprint"]) for r in t.to_pylist()]
        assert sum(m["file_rows"].values()) == len(rows) == m["rows_in"] == m["rows_ok"] + m["rows_rejected"], m
        out[m["shard_id"]] = sorted(rows)
    return out


def part_files(fs: AbstractFileSystem, root: str) -> set[str]:
    """Every part file under the output, relative."""
    found: set[str] = set()
    for folder in (root, posixpath.join(root, "_rejects")):
        try:
            found |= {p for p in fs.ls(folder, detail=False) if posixpath.basename(p).startswith("part-")}
        except FileNotFoundError:
            pass
    return {p[len(root.rstrip("/")) + 1 :] for p in found}


def listed_files(fs: AbstractFileSystem, root: str) -> set[str]:
    out: set[str] = set()
    try:
        names = [p for p in fs.ls(posixpath.join(root, "_manifests"), detail=False) if p.endswith(".json")]
    except FileNotFoundError:
        return out
    for name in names:
        m = json.loads(fs.cat_file(name))
        out |= set(m["files"] + m["reject_files"])
    return out


def check_consistent(fs: AbstractFileSystem, root: str) -> dict[str, list[tuple[Any, ...]]]:
    """After any crash: every manifest's files exist and hold exactly its shard's rows once
    (0..rows_in-1), whatever else lies around."""
    rows = listed_rows(fs, root)  # reads every listed file: a missing one raises
    for sid, shard_rows in rows.items():
        assert [r[0] for r in shard_rows] == list(range(len(shard_rows))), (sid, shard_rows)
    return rows
