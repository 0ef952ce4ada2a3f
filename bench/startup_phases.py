#!/usr/bin/env python
"""Where each system's start-up time goes, read from the logs of a finished `bench/run.py` run.

    python bench/startup_phases.py OUT [--json OUT/startup_phases.json]

vLLM logs the same four lines on the way up in every system (raw vLLM, Ray Data LLM, enrich).
For each run this takes the time, from launch, at which the last of its engines logged each:

    config     'Enforce eager set'            the process is up, has imported vLLM, built its config
    core       'Initializing a V1 LLM engine' the EngineCore process is up
    weights    'Attempted to load weight embed_tokens'   the model worker is up, loading weights
    ready      'init engine ... took'         profile, KV cache and warm-up done

Each line is logged once per engine on its way up (vLLM logs 'Enforce eager set' again once an
engine runs): per engine process (Ray's `pid=` prefix) the first line counts; raw vLLM's lines
carry no pid, and there the k-th line counts, k = the number of engines (its engines start
side by side, so all their start-up lines come before either's second config line). Log times
are the machine's local clock, as the launch time is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import stats

MARKERS = {
    "config": re.compile(r"Enforce eager set"),
    "core": re.compile(r"Initializing a V1 LLM engine"),
    "weights": re.compile(r"Attempted to load weight embed_tokens"),  # the first tensor: once per engine
    "ready": re.compile(r"init engine \(profile"),
}
STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
PID = re.compile(r"pid=(\d+)")
INIT_TOOK = re.compile(r"init engine \(profile.*took ([\d.]+) s")


def line_time(line: str) -> float | None:
    m = STAMP.search(line)
    return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def phases(log: str, t_launch: float, engines: int) -> dict[str, float | None]:
    """Seconds from launch until the last engine logged each marker (None: fewer engines did)."""
    by_pid: dict[str, dict[str, float]] = {name: {} for name in MARKERS}
    unprefixed: dict[str, list[float]] = {name: [] for name in MARKERS}
    for line in log.splitlines():
        t = line_time(line)
        if t is None:
            continue
        for name, pattern in MARKERS.items():
            if pattern.search(line):
                pid = PID.search(line)
                if pid:
                    by_pid[name].setdefault(pid.group(1), t)
                else:
                    unprefixed[name].append(t)
    out: dict[str, float | None] = {}
    for name in MARKERS:
        times = sorted(by_pid[name].values()) if by_pid[name] else unprefixed[name]
        out[name] = round(times[engines - 1] - t_launch, 2) if len(times) >= engines else None
    return out


def init_seconds(log: str) -> list[float]:
    """What vLLM's 'init engine (profile, create kv cache, warmup model) took' says, per engine:
    the same work in every system, so a run-to-run difference here is the machine's."""
    return [float(m.group(1)) for m in INIT_TOOK.finditer(log)]


def summarize(results: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """Median (min-max) of each marker's time from launch, per system and input size, and the
    range of vLLM's own engine init (`init_took_s`, over all engines of all runs)."""
    groups: dict[tuple[str, int], list[dict[str, float | None]]] = {}
    took: dict[tuple[str, int], list[float]] = {}
    for run in results["runs"]:
        if not run.get("ok"):
            continue
        name = f"{run['system']}-n{run['rows_requested']}-r{run['repeat']}"
        log = (out / "runs" / name / "log.txt").read_text(errors="replace")
        groups.setdefault((run["system"], run["rows_requested"]), []).append(
            phases(log, run["t_launch"], run.get("engines", 1))
        )
        took.setdefault((run["system"], run["rows_requested"]), []).extend(init_seconds(log))
    rows = []
    for (system, n), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row: dict[str, Any] = {"system": system, "rows": n, "runs": len(runs)}
        for name in MARKERS:
            row[name] = stats.summarize(r[name] for r in runs)
        seconds = took.get((system, n), [])
        row["init_took_s"] = {"min": min(seconds), "max": max(seconds)} if seconds else None
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def cell(v: dict[str, float] | None) -> str:
        return "n/a" if v is None else f"{v['median']:.1f} ({v['min']:.1f}–{v['max']:.1f})"

    lines = [
        "| system | rows | runs | config | engine core | weights | ready |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['rows']} | {r['runs']} | " + " | ".join(cell(r[n]) for n in MARKERS) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="a bench/run.py --out folder (results.json, runs/*/log.txt)")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()
    rows = summarize(json.loads((args.out / "results.json").read_text()), args.out)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
