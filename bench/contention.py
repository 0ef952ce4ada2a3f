#!/usr/bin/env python
"""Does CPU taken by other processes explain enrich's slower engine? A causal check.

While the engines decode, enrich's own processes (Ray's daemons, the driver, the engine
actor) used about 0.2 of a core on this 2-core machine, against 0.02 for raw vLLM, and
enrich's engine decoded at about 0.9x raw vLLM's rate (bench/RESULTS.md). This tool gives
raw vLLM the same neighbours without Ray: it runs beside `bench/run.py` and, for every second
ceiling engine it sees (a `VLLM::Worker` process below the ceiling's worker), starts `--procs`
processes that together burn `--cores` of a core in short duty cycles (as Ray's many small
wake-ups do) until that engine is gone. The ceiling's runs then alternate, alone and with
neighbours, in one invocation beside enrich's; `summarize` matches them to the harness's
records by time.

    python bench/contention.py noise EVENTS.jsonl --cores 0.2 --procs 4   # until killed
    python bench/contention.py summarize EVENTS.jsonl OUT/results.json [--json OUT/contention.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import sys
import time
from pathlib import Path
from typing import Any

from cpu_share import kind
from stats import ratio
from stats import summarize as spread

PERIOD_S = 0.02  # a neighbour wakes every 20 ms, as Ray's polling loops do (order of magnitude)
POLL_S = 0.5


def burn(share: float, stop: Any, spent: Any) -> None:
    """Keep one process busy `share` of the time, in PERIOD_S cycles, until `stop` is set;
    then report the CPU seconds it used on `spent`."""
    busy = PERIOD_S * share
    while not stop.is_set():
        start = time.perf_counter()
        while time.perf_counter() - start < busy:
            pass
        time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - start)))
    spent.put(time.process_time())


def model_worker(under: str, seen: set[int]) -> Any | None:
    """A live vLLM model worker process, not in `seen`, with `under` in an ancestor's command
    line, if any. (An exited worker lingers as a zombie until reaped: not a new engine.)"""
    import psutil

    for p in psutil.process_iter(["cmdline", "name", "status"]):
        cmd = " ".join(p.info["cmdline"] or []) or p.info["name"] or ""
        if kind(cmd) == "model_worker" and p.pid not in seen and p.info["status"] != psutil.STATUS_ZOMBIE:
            try:
                if any(under in " ".join(a.cmdline()) for a in p.parents()):
                    return p
            except psutil.Error:  # gone while we looked
                continue
    return None


def noise(events: Path, cores: float, procs: int, under: str) -> None:
    """Watch for engines; neighbours on every second one. One JSON line per engine seen; a
    restarted watcher goes on with the alternation of the lines already in `events`."""
    before = [json.loads(line) for line in events.read_text().splitlines() if line.strip()] if events.exists() else []
    count, pids = len(before), {e["pid"] for e in before}
    while True:
        worker = model_worker(under, pids)
        if worker is None:
            time.sleep(POLL_S)
            continue
        count += 1
        pids.add(worker.pid)
        noisy = count % 2 == 0
        stop, spent = mp.Event(), mp.Queue()
        burners = [mp.Process(target=burn, args=(cores / procs, stop, spent), daemon=True)
                   for _ in range(procs if noisy else 0)]  # fmt: skip
        for b in burners:
            b.start()
        t0 = time.time()
        _wait_gone(worker)
        t1 = time.time()
        stop.set()
        reported = []
        for _ in burners:
            try:
                reported.append(spent.get(timeout=10))
            except queue.Empty:  # a burner that died reports nothing: the line says how many did
                break
        for b in burners:
            b.join(timeout=5)
        cpu = sum(reported)
        line = {"engine": count, "pid": worker.pid, "noisy": noisy, "t0": t0, "t1": t1,
                "burners": len(burners), "burners_reported": len(reported),
                "noise_cpu_s": round(cpu, 2), "noise_cores": round(cpu / (t1 - t0), 3) if t1 > t0 else None}  # fmt: skip
        with events.open("a") as f:
            f.write(json.dumps(line) + "\n")


def _wait_gone(worker: Any) -> None:
    import psutil

    try:
        while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
            time.sleep(POLL_S)
    except psutil.NoSuchProcess:  # reaped between the two calls
        pass


def summarize(events: list[dict[str, Any]], results: dict[str, Any]) -> dict[str, Any]:
    """The ceiling's runs, alone and with neighbours, matched to the engine events by time;
    and, for reference, enrich's runs of the same invocation (no neighbours added)."""
    if len({e["pid"] for e in events}) != len(events):
        raise SystemExit("an engine pid appears in two events: the watcher counted one engine twice")
    ceiling, enrich = [], []
    for r in sorted(results["runs"], key=lambda r: r["t_launch"]):
        if not r.get("ok"):
            continue
        if r["system"] == "ceiling":
            mine = [e for e in events if r["t_launch"] <= e["t0"] <= r["t_exit"]]
            if len(mine) != 1:
                raise SystemExit(f"ceiling repeat {r['repeat']}: {len(mine)} engine events in its run, not 1")
            # The neighbours (or their absence) must span the whole steady window.
            ready, last = r["t_launch"] + r["launch_to_engine_ready_s"], r["t_launch"] + r["wall_to_last_row_s"]
            if not (mine[0]["t0"] <= ready and mine[0]["t1"] >= last):
                raise SystemExit(f"ceiling repeat {r['repeat']}: its engine event does not span ready → last row")
            ceiling.append({"repeat": r["repeat"], "noisy": mine[0]["noisy"], "noise_cores": mine[0]["noise_cores"],
                            "steady_rows_per_s": r["steady_rows_per_s"],
                            "generate_call_rows_per_s": r.get("generate_call_rows_per_s")})  # fmt: skip
        elif r["system"] == "enrich":
            engines = (r.get("engine_stats") or {}).values()
            active = sum(e["active_seconds"] for e in engines)
            enrich.append({"repeat": r["repeat"], "steady_rows_per_s": r["steady_rows_per_s"],
                           "active_rows_per_s": round(r["rows"] / active, 3) if active else None})  # fmt: skip
    alone = spread(x["steady_rows_per_s"] for x in ceiling if not x["noisy"])
    noisy = spread(x["steady_rows_per_s"] for x in ceiling if x["noisy"])
    over_alone = ratio(noisy, alone)
    return {
        "ceiling": ceiling,
        "enrich": enrich,
        "ceiling_alone_median": _median(alone),
        "ceiling_with_neighbours_median": _median(noisy),
        "with_neighbours_over_alone": round(over_alone, 3) if over_alone else None,
        "enrich_median": _median(spread(x["steady_rows_per_s"] for x in enrich)),
        "enrich_active_median": _median(spread(x["active_rows_per_s"] for x in enrich)),
    }


def _median(stat: dict[str, Any] | None) -> float | None:
    return round(stat["median"], 3) if stat else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("noise")
    n.add_argument("events", type=Path)
    n.add_argument("--cores", type=float, default=0.2, help="cores the neighbours burn together (default 0.2)")
    n.add_argument("--procs", type=int, default=4, help="neighbour processes (default 4)")
    n.add_argument("--under", default="_worker ceiling ",  # the space: not ceiling-all-cores' workers
                   help="only engines below a process whose command line holds this (default: the ceiling's)")
    m = sub.add_parser("summarize")
    m.add_argument("events", type=Path)
    m.add_argument("results", type=Path)
    m.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.cmd == "noise":
        noise(args.events, args.cores, args.procs, args.under)
        return 0
    events = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
    out = summarize(events, json.loads(args.results.read_text()))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
