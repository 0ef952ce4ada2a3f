"""The reaper: a process's children die with it even under SIGKILL (no vLLM, no Ray)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from enrich.engine_reaper import _start_time, descendants, stop_and_wait

# A stand-in engine actor: starts its reaper, then an "EngineCore" child, then waits.
ACTOR = """
import subprocess, sys, time
from enrich.engine_reaper import start_reaper
start_reaper()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
time.sleep(600)
"""


def test_children_die_within_seconds_of_a_sigkilled_parent() -> None:
    actor = subprocess.Popen([sys.executable, "-c", ACTOR], env={**os.environ})
    try:
        deadline = time.time() + 30
        engine: dict[int, str] = {}
        while time.time() < deadline and len(engine) < 1:
            found = descendants(actor.pid)
            engine = {p: t for p, t in found.items() if b"engine_reaper" not in open(f"/proc/{p}/cmdline", "rb").read()}
            time.sleep(0.1)
        assert engine, "the stand-in engine never started"
        # Kill only once the reaper runs and has had time for a few snapshots (POLL = 0.5 s); a
        # loaded machine can take seconds just to start its Python.
        while time.time() < deadline and not _reaper_of(actor.pid):
            time.sleep(0.1)
        assert _reaper_of(actor.pid), "the reaper never started"
        time.sleep(2.0)
        os.kill(actor.pid, signal.SIGKILL)
        actor.wait()
        gone_by = time.time() + 10
        while time.time() < gone_by and any(_start_time(p) == t for p, t in engine.items()):
            time.sleep(0.1)
        assert [p for p, t in engine.items() if _start_time(p) == t] == []
    finally:
        if actor.poll() is None:
            actor.kill()


def test_stop_and_wait_waits_for_exiting_processes_and_kills_the_rest() -> None:
    """The engine actor's shutdown returns only once its engine processes are gone: one that
    exits by itself is waited for (not killed), one that does not is SIGKILLed at the timeout."""
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(0.2)  # both started (their /proc entries exist)
    procs = {p.pid: _start_time(p.pid) for p in (quick, stuck)}
    assert None not in procs.values()
    started = time.monotonic()
    killed = stop_and_wait(procs, timeout=3.0)  # type: ignore[arg-type]
    assert 3.0 <= time.monotonic() - started < 5.0
    assert killed == [stuck.pid]
    assert quick.wait(timeout=5) == 0 and stuck.wait(timeout=5) == -signal.SIGKILL


def _reaper_of(actor: int) -> list[int]:
    """Pids of reaper processes watching `actor` (they run in a session of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"enrich.engine_reaper" in cmd and str(actor).encode() in cmd:
                found.append(int(entry))
    return found
