"""Discover shards: list the input once, recording each file's version (etag on S3, mtime
locally) and size, so a shard is read at that version or not at all (see pinned.py).

Errors: `InputError` is a bad input file (`--on-bad-file skip` may skip it); `StorageError`
is storage refusing or failing (access denied, credentials, retries exhausted), which no
option skips: the run fails naming the URL and the cause.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass
from typing import Any

from fsspec.spec import AbstractFileSystem

from enrich.config import JobConfig
from enrich.storage import filesystem, unstrip

PARQUET_EXT = (".parquet", ".pq")
JSONL_EXT = (".jsonl", ".ndjson", ".json")


class InputError(ValueError):
    """A whole input file cannot be read (missing column, wrong type, corrupt, changed)."""


class StorageError(OSError):
    """Storage refused or failed on an input (access denied, bad credentials, retries
    exhausted). Not a property of the file: skipping it would hide a broken setup."""


def _credential_errors() -> tuple[type[BaseException], ...]:
    # botocore's NoCredentialsError & co. are not OSErrors; s3fs lets them through as is.
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        return ()
    return (BotoCoreError,)


def storage_errors() -> tuple[type[BaseException], ...]:
    """Exception types that storage raises (for `except` clauses around reads)."""
    return (OSError, *_credential_errors())


def is_storage_failure(exc: BaseException) -> bool:
    """A failure of the storage rather than of the bytes. pyarrow's own "corrupt file"
    errors are ArrowInvalid (ValueError) or OSErrors without an errno; storage errors carry
    a type or an errno (s3fs maps 403 to PermissionError, exhausted retries to EIO...)."""
    if isinstance(exc, (StorageError, PermissionError, ConnectionError, TimeoutError, FileNotFoundError)):
        return True
    if isinstance(exc, _credential_errors()):
        return True
    return isinstance(exc, OSError) and exc.errno is not None


def storage_error(url: str, exc: BaseException) -> InputError | StorageError:
    """A storage failure that retries did not cure, as an error naming the URL and the cause
    (s3fs's own messages, e.g. "Forbidden", name neither). A file replaced or removed since
    it was listed is an InputError: the file changed, not the storage."""
    if type(exc).__name__ == "FileExpired" or isinstance(exc, FileNotFoundError):
        return changed_error(url, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, StorageError):
        return exc
    return StorageError(getattr(exc, "errno", None) or errno.EIO, f"{url}: {type(exc).__name__}: {exc}")


def changed_error(url: str, detail: str) -> InputError:
    return InputError(f"{url}: changed since it was listed ({detail}); rerun to read the new version")


@dataclass(frozen=True)
class ShardInfo:
    """One input file, identified by its URL and the version we saw (etag or mtime, size)."""

    url: str
    format: str
    size: int
    version: str

    @property
    def shard_id(self) -> str:
        return hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:16]


def shard_format(path: str, requested: str) -> str | None:
    if requested != "auto":
        return requested
    lower = path.lower()
    if lower.endswith(PARQUET_EXT):
        return "parquet"
    if lower.endswith(JSONL_EXT):
        return "jsonl"
    return None


def version_of(info: dict[str, Any]) -> str:
    """The version a listing or info entry names: etag on S3, else mtime."""
    for key in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return ""


def discover_shards(cfg: JobConfig) -> list[ShardInfo]:
    """All shards named by `cfg.input` (file, folder, glob), sorted by URL."""
    fs, path = filesystem(cfg.input, cfg.s3_endpoint)
    try:
        return _discover(cfg, fs, path)
    except storage_errors() as exc:
        raise storage_error(cfg.input, exc) from exc


def _discover(cfg: JobConfig, fs: AbstractFileSystem, path: str) -> list[ShardInfo]:
    # Listings with details: one request per listing, not one more per file.
    explicit = True
    if any(ch in path for ch in "*?["):
        listing = {p: i for p, i in fs.glob(path, detail=True).items() if not _hidden(p.rsplit("/", 1)[-1])}
    elif fs.isdir(path):
        explicit = False
        listing = {p: i for p, i in fs.find(path, detail=True).items() if not _hidden(p[len(path) :])}
    elif fs.exists(path):
        listing = {path: fs.info(path)}
    else:
        raise InputError(f"{cfg.input}: no such file or folder")
    shards = []
    for p, info in sorted(listing.items()):
        fmt = shard_format(p, cfg.format)
        if fmt is None:
            if explicit:
                raise InputError(f"{unstrip(fs, p)}: unknown extension; pass --format")
            continue
        if info.get("type") == "directory":
            continue
        shards.append(ShardInfo(unstrip(fs, p), fmt, int(info.get("size") or 0), version_of(info)))
    if not shards:
        raise InputError(f"{cfg.input}: no Parquet or JSONL shards found")
    return shards


def _hidden(relative: str) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)
