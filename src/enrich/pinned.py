"""Read an input at the version recorded when it was listed, or fail the shard.

S3: s3fs sends every ranged GET of an open file with `If-Match: <etag of the open>`; we check
that etag (and the size) against the listing's, so a replaced object fails at open or at
the next GET (s3fs raises FileExpired), never mixing versions. Local files: mtime and size
are checked at open and again after the last byte, before the shard's final chunk (the one
carrying its row count) is handed on, so a changed file never commits.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import pyarrow as pa
from fsspec.spec import AbstractFileSystem
from pyarrow.fs import FSSpecHandler, PyFileSystem

from enrich.discover import ShardInfo, changed_error, version_of


def check_version(shard: ShardInfo, info: dict[str, Any]) -> None:
    """InputError when `info` (a HEAD/stat of the file now) is not the listed version. A
    shard without a recorded version (built by hand, not listed) is not checked."""
    if not shard.version:
        return
    now, size = version_of(info), int(info.get("size") or 0)
    if (now, size) != (shard.version, shard.size):
        raise changed_error(shard.url, f"listed version {shard.version}, {shard.size} bytes; now {now}, {size} bytes")


def open_pinned(fs: AbstractFileSystem, path: str, shard: ShardInfo) -> BinaryIO:
    """`fs.open(path)`, checked to be the listed version."""
    handle = fs.open(path, "rb")
    try:
        check_version(shard, _details(handle) or fs.info(path))
    except BaseException:
        handle.close()
        raise
    return handle


def check_unchanged(fs: AbstractFileSystem, path: str, shard: ShardInfo, handle: Any) -> None:
    """After the last read: stores whose reads are not pinned to an etag are checked again."""
    if shard.version and not _pins_reads(handle):
        check_version(shard, fs.info(path))


def _details(handle: Any) -> dict[str, Any] | None:
    details = getattr(handle, "details", None)  # s3fs: the HEAD the file was opened with
    return details if isinstance(details, dict) and "ETag" in details else None


def _pins_reads(handle: Any) -> bool:
    return _details(handle) is not None and "IfMatch" in (getattr(handle, "read_kw", None) or {})


class PinnedHandler(FSSpecHandler):
    """pyarrow's fsspec bridge, opening the shard at its listed version. (pyarrow 26 aborts
    at exit when handed an fsspec file object directly; a filesystem is safe.) Opening
    directly also keeps the real error: the stock bridge reports any failure as "not found"."""

    def __init__(self, fs: AbstractFileSystem, shard: ShardInfo) -> None:
        super().__init__(fs)
        self.shard = shard
        self.handle: Any = None

    def open_input_file(self, path: str) -> pa.PythonFile:
        self.handle = open_pinned(self.fs, path, self.shard)
        return pa.PythonFile(self.handle, mode="r")


def pinned_arrow_fs(fs: AbstractFileSystem, shard: ShardInfo) -> tuple[PyFileSystem, PinnedHandler]:
    handler = PinnedHandler(fs, shard)
    return PyFileSystem(handler), handler
