"""Lease: one writing driver per output prefix.

`_lease.json` is created with a conditional write (S3 `If-None-Match: *` through s3fs's
`pipe_file(mode="create")`; a hard link locally, which fails if the name exists). It names the
run and an expiry, and the holder renews it while it works. A second driver finds a live lease
and is refused with a clear message; an expired one (a crashed driver) is taken over.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Callable

from fsspec.spec import AbstractFileSystem

LEASE = "_lease.json"
DEFAULT_TTL = 3600.0  # seconds; renewed every ttl/4 while descriptors arrive


class OutputLockedError(RuntimeError):
    """Another live run holds the output's lease."""


def is_local(fs: AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def put(fs: AbstractFileSystem, path: str, data: bytes, create: bool = False) -> None:
    """ONE atomic write: a single PUT on an object store; tmp + rename (or link, for
    create-if-absent) locally. `create`: raise FileExistsError if `path` exists."""
    if not is_local(fs):
        fs.pipe_file(path, data, mode="create" if create else "overwrite")
        return
    os.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        if create:
            os.link(tmp, path)  # atomic, and fails when the name exists
        else:
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def _stale(held: dict, now: float) -> bool:
    """Expired, or held by a process of this host that is gone (a killed driver rerun on the
    same machine need not wait for the expiry)."""
    if held.get("expires", 0) <= now:
        return True
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Lease:
    def __init__(
        self, fs: AbstractFileSystem, root: str, run_id: str, ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fs, self.path, self.run_id, self.ttl, self.clock = fs, posixpath.join(root, LEASE), run_id, ttl, clock
        self.renewed = 0.0
        self.held = False

    def _body(self) -> bytes:
        now = self.clock()
        return json.dumps({"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires": now + self.ttl}).encode("utf-8")

    def _read(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None

    def acquire(self, output: str) -> None:
        try:
            put(self.fs, self.path, self._body(), create=True)
        except FileExistsError:
            held = self._read()
            if held is not None and held.get("run_id") != self.run_id and not _stale(held, self.clock()):
                raise OutputLockedError(
                    f"{output} is being written by run {held.get('run_id')} (host {held.get('host')}, "
                    f"pid {held.get('pid')}) until its lease expires at "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(held['expires']))} UTC; "
                    f"two drivers must not write one output. If that run is dead, wait for the "
                    f"expiry or delete {LEASE} under the output."
                ) from None
            put(self.fs, self.path, self._body())  # expired (a crashed run) or ours: take over
            if (self._read() or {}).get("run_id") != self.run_id:
                raise OutputLockedError(f"{output}: another run took the lease at the same time") from None
        self.held, self.renewed = True, self.clock()

    def renew(self) -> None:
        """Push the expiry out (cheap to call often: writes at most every ttl/4)."""
        if self.held and self.clock() - self.renewed > self.ttl / 4:
            put(self.fs, self.path, self._body())
            self.renewed = self.clock()

    def release(self) -> None:
        if self.held:
            held = self._read()
            if held is not None and held.get("run_id") == self.run_id:
                self.fs.rm_file(self.path) if not is_local(self.fs) else os.remove(self.path)
            self.held = False
