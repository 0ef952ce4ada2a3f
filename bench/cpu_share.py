#!/usr/bin/env python
"""Who gets the CPU while the engines decode: a sampler that runs beside `bench/run.py`, and the
per-run summary of what it saw.

    python bench/cpu_share.py sample SAMPLES.jsonl           # every 10 s until killed
    python bench/cpu_share.py summarize SAMPLES.jsonl[.gz] OUT/results.json [--json OUT/cpu_share.json]

`sample` writes, every 10 s, each process's CPU seconds (user + system, from psutil)
spent since the previous sample. `summarize` takes each ok run's decoding window, from engine
ready + 15 s to the last row − 10 s, and reports the mean cores used by vLLM's model workers
(`VLLM::Worker`), by its engine cores (`VLLM::EngineCore`, which also spin while they wait on the
worker) and by every other process on the machine. It is a separate tool, not part of the
harness: its 10 s samples are too coarse for the harness's numbers, but they show where the
cores went. Limits: a process's first interval and processes shorter than one interval are not
counted; a sample is picked by its end time, so it may start up to 10 s before the window.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

INTERVAL_S = 10.0


def cpu_seconds() -> dict[str, tuple[float, str]]:
    """pid -> (CPU seconds so far, command line or name), read with psutil as monitor.py does."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        times = p.info["cpu_times"]  # None when the process is gone or not ours to read
        if times is not None:
            cmd = " ".join(p.info["cmdline"] or [])[:120].strip() or p.info["name"] or ""
            out[str(p.pid)] = (times.user + times.system, cmd)
    return out


def sample(path: Path) -> None:
    prev = cpu_seconds()
    with path.open("a") as f:
        while True:
            time.sleep(INTERVAL_S)
            cur = cpu_seconds()
            procs = {pid: [round(c - prev[pid][0], 2), cmd] for pid, (c, cmd) in cur.items()
                     if pid in prev and c - prev[pid][0] > 0.05}  # fmt: skip
            f.write(json.dumps({"t": time.time(), "load": os.getloadavg()[0], "procs": procs}) + "\n")
            f.flush()
            prev = cur


def kind(cmd: str) -> str:
    return "model_worker" if "VLLM::Worker" in cmd else "engine_core" if "EngineCore" in cmd else "other"


def summarize(samples: list[dict[str, Any]], results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(results["runs"], key=lambda r: r["t_launch"]):
        if not run.get("ok") or run.get("launch_to_engine_ready_s") is None:
            continue
        t0 = run["t_launch"] + run["launch_to_engine_ready_s"] + 15
        t1 = run["t_launch"] + run["wall_to_last_row_s"] - 10
        # A sample holds the CPU spent since the one before it: its span is that gap, not 10 s.
        window = [(s, s["t"] - (samples[i - 1]["t"] if i else s["t"] - INTERVAL_S))
                  for i, s in enumerate(samples) if t0 <= s["t"] <= t1]  # fmt: skip
        if not window:
            continue
        cores: dict[str, float] = {"model_worker": 0.0, "engine_core": 0.0, "other": 0.0}
        top: dict[str, float] = {}
        for s, _ in window:
            for cpu, cmd in s["procs"].values():
                k = kind(cmd)
                cores[k] += cpu
                if k == "other":
                    top[cmd[:60]] = top.get(cmd[:60], 0.0) + cpu
        span = sum(dt for _, dt in window)
        rows.append({
            "system": run["system"], "rows": run.get("rows_requested"), "repeat": run["repeat"],
            "window_s": round(t1 - t0, 1), "samples": len(window),
            **{f"{k}_cores": round(v / span, 3) for k, v in cores.items()},
            "other_top": {k: round(v / span, 3) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:6]},
            # No model worker seen: vLLM's process titles were not read (a spawn command line
            # instead), so the split by kind is void for this run; the per-pid samples are not.
            "classified": cores["model_worker"] > 0,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("samples", type=Path)
    m = sub.add_parser("summarize")
    m.add_argument("samples", type=Path)
    m.add_argument("results", type=Path)
    m.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.cmd == "sample":
        sample(args.samples)
        return 0
    text = gzip.decompress(args.samples.read_bytes()).decode() if args.samples.suffix == ".gz" else args.samples.read_text()
    samples = [json.loads(line) for line in text.splitlines() if line.strip()]
    rows = summarize(samples, json.loads(args.results.read_text()))
    for r in rows:
        print(f"{r['system']:18s} n{r['rows']} r{r['repeat']}  {r['window_s']:5.0f} s  model workers {r['model_worker_cores']:.2f}"
              f"  engine cores {r['engine_core_cores']:.2f}  other {r['other_cores']:.2f} cores")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"samples": str(args.samples), "interval_s": INTERVAL_S, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
