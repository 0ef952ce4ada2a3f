"""Lease: one writing driver per output prefix.

`_lease.json` is created with a conditional write (S3 `If-None-Match: *` through s3fs's
`pipe_file(mode="create")`; a hard link locally, which fails if the name exists). It names the
run and an expiry, and the holder renews it while it works. A second driver finds a live lease
and is refused with a clear message; an expired one (a crashed driver) is taken over.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable

from fsspec.spec import AbstractFileSystem

LEASE = "_lease.json"
DEFAULT_TTL = 3600.0  # seconds; renewed every ttl/4 (LeaseHeartbeat), and as descriptors arrive
log = logging.getLogger(__name__)


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
        self.lost: str | None = None  # set when another run was found holding the lease
        self._lock = threading.Lock()  # the heartbeat thread and the commit path both renew

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

    def renew(self, check: bool = False) -> None:
        """Push the expiry out (cheap to call often: writes at most every ttl/4). `check`: first
        read the lease, and if another run holds it (ours expired, e.g. the driver stalled past
        the TTL, and a second driver took over) mark it lost. A lost lease fails the run at its
        next commit instead of letting two drivers write one output."""
        with self._lock:
            if self.lost:
                raise OutputLockedError(self.lost)
            if not self.held or self.clock() - self.renewed <= self.ttl / 4:
                return
            if check:
                holder = (self._read() or {}).get("run_id")
                if holder not in (None, self.run_id):
                    self.lost = (f"{self.path}: run {holder} took over this run's lease (it had "
                                 f"expired); this run stops writing")
                    raise OutputLockedError(self.lost)
            put(self.fs, self.path, self._body())
            self.renewed = self.clock()

    def release(self) -> None:
        if self.held:
            held = self._read()
            if held is not None and held.get("run_id") == self.run_id:
                self.fs.rm_file(self.path) if not is_local(self.fs) else os.remove(self.path)
            self.held = False


class LeaseHeartbeat:
    """Renews leases every ttl/4 from a daemon thread while the run works: the commit path
    renews only as descriptors arrive, and an engine warming up or a shard slower than the TTL
    sends none for a while; without this, a second driver could take a live run's output."""

    def __init__(self, leases: list[Lease]) -> None:
        self.leases = leases
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
        if self.leases:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _beat(self) -> None:
        interval = min(lease.ttl for lease in self.leases) / 4
        while not self.stop.wait(interval):
            for lease in self.leases:
                try:
                    lease.renew(check=True)
                except OutputLockedError as exc:
                    log.error("%s", exc)
                except Exception:  # noqa: BLE001 - a failed renewal is retried at the next beat
                    log.warning("could not renew the lease %s", lease.path, exc_info=True)
