"""The lease heartbeat: a run that sends no descriptor for longer than the TTL keeps its
output, and a run whose lease another run took over stops committing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import fsspec
import pytest

from enrich.lease import Lease, LeaseHeartbeat, OutputLockedError


def test_heartbeat_keeps_a_quiet_run_s_lease_alive(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    held = Lease(fs, str(tmp_path), "r-quiet", ttl=0.4)
    held.acquire(str(tmp_path))
    with LeaseHeartbeat([held]):
        time.sleep(1.2)  # three TTLs without a descriptor
        with pytest.raises(OutputLockedError, match="r-quiet"):
            Lease(fs, str(tmp_path), "r-second", ttl=0.4).acquire(str(tmp_path))
    time.sleep(0.5)  # heartbeat stopped: the lease expires and can be taken over
    assert json.loads((tmp_path / "_lease.json").read_text())["expires"] < time.time()
    taker = Lease(fs, str(tmp_path), "r-third", ttl=0.4)
    taker.acquire(str(tmp_path))
    assert json.loads((tmp_path / "_lease.json").read_text())["run_id"] == "r-third"


def test_a_lease_taken_over_is_lost_and_the_next_commit_refused(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    held = Lease(fs, str(tmp_path), "r-stalled", ttl=0.4)
    held.acquire(str(tmp_path))
    # The stalled run's lease expired and another driver took the output.
    (tmp_path / "_lease.json").write_text(json.dumps({"run_id": "r-new", "host": "h", "pid": 1,
                                                      "expires": time.time() + 3600}))
    with LeaseHeartbeat([held]):
        time.sleep(0.6)
    assert held.lost and "r-new" in held.lost
    with pytest.raises(OutputLockedError, match="r-new took over"):
        held.renew()  # what the commit path calls before each commit
    assert json.loads((tmp_path / "_lease.json").read_text())["run_id"] == "r-new"  # left alone
