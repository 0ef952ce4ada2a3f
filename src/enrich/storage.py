"""Filesystems: one place that turns a path or URL into an fsspec filesystem.

Credentials come from the usual AWS environment/config (never from our config), so they
never reach logs, summaries or lineage columns.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from functools import lru_cache

import fsspec
from fsspec.core import split_protocol
from fsspec.spec import AbstractFileSystem


# Throttling, 5xx and connection resets are retried by botocore with backoff; a nightly
# job rides out a slow minute of S3 rather than fail on the first 503.
S3_RETRIES = {"max_attempts": 10, "mode": "adaptive"}


def storage_options(url: str, s3_endpoint: str | None) -> dict[str, object]:
    protocol, _ = split_protocol(url)
    if protocol not in ("s3", "s3a"):
        return {}
    options: dict[str, object] = {"config_kwargs": {"retries": S3_RETRIES}}
    if s3_endpoint:
        options["client_kwargs"] = {"endpoint_url": s3_endpoint}
    return options


@lru_cache(maxsize=16)
def _filesystem(protocol: str, endpoint: str | None) -> AbstractFileSystem:
    options = storage_options(f"{protocol}://x", endpoint) if protocol != "file" else {}
    # retries: s3fs retries throttling and 5xx itself; keep its defaults
    return fsspec.filesystem(protocol, **options)


def filesystem(url: str, s3_endpoint: str | None = None) -> tuple[AbstractFileSystem, str]:
    """Filesystem and the path within it (no protocol) for `url`."""
    protocol, path = split_protocol(url)
    protocol = protocol or "file"
    if protocol == "file":
        path = os.path.abspath(os.path.expanduser(path))
    return _filesystem(protocol, s3_endpoint), path


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/"), *parts)


def unstrip(fs: AbstractFileSystem, path: str) -> str:
    """Full URL for a filesystem-relative path (for messages and lineage)."""
    return fs.unstrip_protocol(path) if not _is_local(fs) else path


def _is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def remove(fs: AbstractFileSystem, path: str, recursive: bool = False) -> None:
    """Delete `path` if present. Local paths go through shutil/os: fsspec's local `rm` calls
    os.getcwd(), which fails in a job driver whose working dir was re-extracted under it."""
    if _is_local(fs):
        if os.path.isdir(path) and recursive:
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    elif fs.exists(path):
        fs.rm(path, recursive=recursive)
