"""Running one benchmark process: its output logged and stamped line by line, the summed RSS
of its process tree, and the processes it leaves behind."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import REPO

RSS_INTERVAL_S = 0.5
MAX_LABELS = 4  # titles kept per process
PROCESS_POINTS = 30  # samples kept per process by process_profile


def tree_rss(pid: int) -> tuple[int, list[Any]]:
    """Summed RSS (bytes) of a process and all its descendants, and the processes seen."""
    total, seen, _ = tree_memory(pid)
    return total, seen


def tree_memory(pid: int) -> tuple[int, list[Any], dict[int, tuple[int, int]]]:
    """`tree_rss`, plus each process's (RSS, shared) bytes by pid. Shared counts file-backed and
    shared-memory pages (libraries, Ray's object store in /dev/shm): RSS - shared is what the
    process holds privately, which is where a leak shows."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0, [], {}
    total, seen, per_pid = 0, [], {}
    for p in procs:
        try:
            mem = p.memory_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        total += mem.rss
        seen.append(p)
        if mem.rss:  # a process just born or already exiting reads 0: not a reading
            per_pid[p.pid] = (mem.rss, getattr(mem, "shared", 0))
    return total, seen, per_pid


def process_label(p: Any) -> str | None:
    """What a process is, from its title (Ray workers retitle themselves per task: 'ray::IDLE'
    says nothing, so it gives None and the caller keeps asking)."""
    try:
        cmd = p.cmdline()
    except Exception:  # noqa: BLE001 - gone, or a zombie
        return None
    if not cmd:
        return None
    head = cmd[0]
    if head.startswith("ray::"):  # an actor's title also names the method it is in: drop that
        return None if head.startswith("ray::IDLE") else re.sub(r"(?<=[\w)])\.\w+$", "", head)[:90]
    words = [Path(w).name if i < 2 else w for i, w in enumerate(cmd[:3])]
    return " ".join(words)[:90]


class TreeRssSampler:
    """Polls the summed RSS of a process tree every `interval` seconds in a thread.

    RSS sums count pages shared between processes (libraries, Ray's object store) once per
    process, so the figure is an upper bound of the tree's real footprint; it is the same
    method for every system.
    """

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S, per_process: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_at: float | None = None
        self.peak_procs = 0
        self.samples = 0
        self.timeline: list[tuple[float, int]] = []  # (time, summed RSS) of every sample
        self.seen: dict[int, float] = {}  # pid -> create_time of every process ever seen
        # Per process, when asked for (per_process=True): (time, {pid: (RSS, shared)}) per sample,
        # and the titles each pid had (a Ray worker runs different tasks over its life).
        self.per_process = per_process
        self.process_timeline: list[tuple[float, dict[int, tuple[int, int]]]] = []
        self.labels: dict[int, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeRssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        total, procs, per_pid = tree_memory(self.pid)
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except Exception:  # noqa: BLE001 - gone between listing and asking
                pass
            seen = self.labels.setdefault(p.pid, []) if self.per_process else None
            if seen is not None and len(seen) < MAX_LABELS:  # a full list: no more cmdline reads
                label = process_label(p)
                if label and label not in seen:
                    seen.append(label)
        self.samples += 1
        now = time.time()
        self.timeline.append((now, total))
        if self.per_process:
            self.process_timeline.append((now, per_pid))
        if total > self.peak:
            self.peak, self.peak_at, self.peak_procs = total, now, len(procs)
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def reap_leftovers(seen: dict[int, float], exclude: int | None = None, grace_s: float = 15.0) -> int:
    """Processes of a finished run (seen in its tree, same create_time) that outlive it:
    wait `grace_s`, then terminate them, by pid. Returns how many had to be ended."""
    import psutil

    def alive() -> list[Any]:
        out = []
        for pid, created in seen.items():
            if pid == exclude:
                continue
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    deadline = time.time() + grace_s
    left = alive()
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = alive()
    for p in left:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(left, timeout=5)
    for p in still:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return len(left)


@dataclass
class ProcResult:
    cmd: list[str]
    t_launch: float
    t_exit: float
    returncode: int | None
    timed_out: bool
    peak_rss_bytes: int
    peak_procs: int
    rss_samples: int
    leftover_procs: int
    log_path: str
    matches: dict[str, tuple[float, str]] = field(default_factory=dict)  # name -> (time, line)
    match_times: dict[str, list[float]] = field(default_factory=dict)  # name -> arrival of every match
    rss_timeline: list[tuple[float, int]] = field(default_factory=list)  # (time, summed RSS)
    # With per_process=True: (time, {pid: (RSS, shared)}) per sample, and what each pid was.
    process_timeline: list[tuple[float, dict[int, tuple[int, int]]]] = field(default_factory=list)
    process_labels: dict[int, list[str]] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        return self.t_exit - self.t_launch


def run_monitored(
    cmd: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600.0,
    patterns: dict[str, re.Pattern[str]] | None = None,
    cwd: Path = REPO,
    per_process: bool = False,
) -> ProcResult:
    """Run `cmd` with stdout+stderr to `log_path`, sampling the tree's RSS (`per_process`: also
    each process's); the first line matching each pattern is kept with its arrival time."""
    patterns = patterns or {}
    matches: dict[str, tuple[float, str]] = {}
    match_times: dict[str, list[float]] = {name: [] for name in patterns}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t_launch = time.time()
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )

    def pump() -> None:
        assert proc.stdout is not None
        with open(log_path, "wb") as log:
            for raw in proc.stdout:
                now = time.time()
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                for name, pat in patterns.items():
                    if pat.search(line):
                        match_times[name].append(now)
                        matches.setdefault(name, (now, line.rstrip("\n")))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    with TreeRssSampler(proc.pid, per_process=per_process) as sampler:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            sampler.sample()
            for p in reversed(tree_rss(proc.pid)[1]):  # our own run's processes, by pid
                try:
                    p.kill()
                except Exception:  # noqa: BLE001
                    pass
            proc.wait()
    t_exit = time.time()
    reader.join(timeout=10)
    leftovers = reap_leftovers(sampler.seen, exclude=proc.pid)
    return ProcResult(
        cmd=list(cmd),
        t_launch=t_launch,
        t_exit=t_exit,
        returncode=proc.returncode,
        timed_out=timed_out,
        peak_rss_bytes=sampler.peak,
        peak_procs=sampler.peak_procs,
        rss_samples=sampler.samples,
        leftover_procs=leftovers,
        log_path=str(log_path),
        matches=matches,
        match_times=match_times,
        rss_timeline=sampler.timeline,
        process_timeline=sampler.process_timeline,
        process_labels=sampler.labels,
    )


def log_tail(path: str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def process_profile(
    timeline: Sequence[tuple[float, dict[int, tuple[int, int]]]], labels: dict[int, list[str]], t_launch: float,
    points: int = PROCESS_POINTS,
) -> list[dict[str, Any]]:
    """Each process of the run, largest first: its titles, when it lived, its peak RSS, and its
    private memory (RSS - shared) at its start, middle and end and `points` samples
    [s since launch, RSS, private], so growth can be told apart from Ray's shared object store."""
    series: dict[int, list[tuple[float, int, int]]] = {}
    for ts, per_pid in timeline:
        for pid, (rss, shared) in per_pid.items():
            series.setdefault(pid, []).append((round(ts - t_launch, 1), rss, rss - shared))
    out = []
    for pid, rows in series.items():
        step = max(1, -(-len(rows) // points))  # at most `points` samples
        out.append({
            "pid": pid, "labels": labels.get(pid, []), "from_s": rows[0][0], "to_s": rows[-1][0],
            "peak_rss": max(r[1] for r in rows), "peak_private": max(r[2] for r in rows),
            "private_start_mid_end": [rows[0][2], rows[len(rows) // 2][2], rows[-1][2]],
            "samples": [list(r) for r in rows[::step]],
        })  # fmt: skip
    return sorted(out, key=lambda r: -r["peak_rss"])
