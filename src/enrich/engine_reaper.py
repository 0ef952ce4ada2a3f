"""An engine's processes die with its actor, even when the actor is SIGKILLed.

vLLM runs its EngineCore (and, for tensor parallelism, workers) as child processes of the
engine actor. When the actor dies without running its cleanup (OOM killer, SIGKILL, spot
preemption, the driver and its embedded Ray killed), those children are orphaned and keep their
memory (3.6 GB seen for 1.5 hours; on a GPU node the restarted actor then cannot start).
Nothing inside the dead actor can act, so the actor starts a tiny watchdog process in a session
of its own: it snapshots the actor's descendants every `POLL` seconds and, once the actor is
gone, SIGKILLs the snapshot's processes that still exist (same pid and start time), then exits.
This needs no Ray setting and holds for every way an actor dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL = 0.5


def start_reaper() -> subprocess.Popen | None:
    """Watch this process (the engine actor); call before the engine starts its children."""
    if not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "enrich.engine_reaper", str(os.getpid())],
        start_new_session=True,  # outside the actor's process group: survives a killpg of it
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[19].decode()  # starttime: tells a process from a later one with its pid


def _parents() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    out[int(name)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def descendants(root: int) -> dict[int, str]:
    """pid -> start time of every process below `root`."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        started = _start_time(pid)
        if started is not None and pid != os.getpid():
            found[pid] = started
            stack.extend(children.get(pid, []))
    return found


def stop_and_wait(procs: dict[int, str], timeout: float) -> list[int]:
    """Wait up to `timeout` s for `procs` (pid -> start time) to exit, then SIGKILL the rest;
    the pids that had to be killed."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid, started in procs.items() if _start_time(pid) == started]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _start_time(pid) == procs[pid] and not _is_zombie(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def _is_zombie(pid: int) -> bool:
    # An exited child its parent has not reaped yet: gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def watch(actor: int) -> None:
    actor_started = _start_time(actor)
    seen: dict[int, str] = {}
    while actor_started is not None and _start_time(actor) == actor_started:
        seen = descendants(actor) or seen  # keep the last snapshot while the actor dies
        time.sleep(POLL)
    for pid, started in seen.items():
        if _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
