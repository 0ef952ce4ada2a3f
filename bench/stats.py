"""Statistics over the repeats: per-system summaries (median, min–max) per row count, ratios of
medians, and issue 14's targets judged on them as met / missed / inconclusive."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Below this many repeats there is no spread to judge a target by.
MIN_REPEATS = 3

# Metrics summarised per system: key -> (label, unit scale, digits).
METRICS: dict[str, tuple[str, float, int]] = {
    "wall_to_last_row_s": ("wall, launch → last row written (s)", 1.0, 1),
    "wall_s": ("wall, launch → process exit (s)", 1.0, 1),
    "launch_to_engine_ready_s": ("launch → (first) engine ready (s)", 1.0, 1),
    "launch_to_all_engines_ready_s": ("launch → all engines ready (s)", 1.0, 1),
    "engine_start_s": ("engine start, per system's method (s)", 1.0, 1),
    "time_to_first_output_s": ("launch → first output rows (s)", 1.0, 1),
    "steady_rows_per_s": ("steady rows/s", 1.0, 2),
    "steady_tokens_per_s": ("steady output tok/s", 1.0, 1),
    "e2e_rows_per_s": ("rows / wall to last row", 1.0, 2),
    "peak_rss_bytes": ("peak RSS of tree (GiB)", 1 / 2**30, 2),
    "loadavg_1m_before": ("1-min load at start", 1.0, 2),
}


def summarize(values: Iterable[float | None]) -> dict[str, Any] | None:
    """Median and spread (min, max) of the values that are not None; None if there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_stat(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """`median (min–max)`, or `median` alone for one value, or `n/a`."""
    if not stat:
        return "n/a"
    med = f"{stat['median'] * scale:.{digits}f}"
    if stat["n"] == 1 or stat["min"] == stat["max"]:
        return med
    return f"{med} ({stat['min'] * scale:.{digits}f}–{stat['max'] * scale:.{digits}f})"


def ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den or not den["median"]:
        return None
    return num["median"] / den["median"]


def summarize_runs(runs: list[dict[str, Any]], systems: Sequence[str]) -> dict[str, Any]:
    summary = {}
    for system in systems:
        mine = [r for r in runs if r["system"] == system]
        ok = [r for r in mine if r.get("ok")]
        summary[system] = {
            "runs_ok": len(ok),
            "runs": len(mine),
            "loaded_runs": sum(not r.get("load_ok", True) for r in mine),
            "unpinned_runs": sum(not r.get("settings_pinned", True) for r in mine),
            "idle_engine_runs": sum(bool(r.get("idle_engines")) for r in ok),
            **{key: summarize(r.get(key) for r in ok) for key in METRICS},
        }
    return summary


def aggregate(runs: list[dict[str, Any]], systems: Sequence[str]) -> dict[str, Any]:
    """Per row count: each system's summary, and the targets' ratios of medians."""
    by_rows = {}
    for n in sorted({r["rows_requested"] for r in runs}):
        summary = summarize_runs([r for r in runs if r["rows_requested"] == n], systems)
        by_rows[str(n)] = {"summary": summary, "ratios": {t.key: t.value(summary) for t in TARGETS}}
    return {"by_rows": by_rows}


@dataclass(frozen=True)
class Target:
    """`a.metric / b.metric` (or `a - b` for kind "diff") compared with `threshold`."""

    key: str
    text: str
    a: str
    b: str
    metric: str
    kind: str  # "ge": a/b ≥ t; "le": a/b ≤ t; "diff": a − b ≤ t
    threshold: float
    rows: int | None  # judged only at this row count (None: at every row count)

    def value(self, summary: dict[str, Any]) -> float | None:
        sa, sb = (summary.get(self.a) or {}).get(self.metric), (summary.get(self.b) or {}).get(self.metric)
        if not sa or not sb:
            return None
        return sa["median"] - sb["median"] if self.kind == "diff" else ratio(sa, sb)

    def bounds(self, summary: dict[str, Any]) -> tuple[float, float] | None:
        """The value at the two ends of the spread: (most favourable, least favourable)."""
        sa, sb = summary[self.a][self.metric], summary[self.b][self.metric]
        if self.kind == "diff":
            return sa["min"] - sb["max"], sa["max"] - sb["min"]
        if not sb["min"] or not sb["max"]:
            return None
        hi, lo = sa["max"] / sb["min"], sa["min"] / sb["max"]
        return (hi, lo) if self.kind == "ge" else (lo, hi)

    def met(self, v: float) -> bool:
        return v >= self.threshold if self.kind == "ge" else v <= self.threshold


TARGETS = (
    Target("enrich_vs_ceiling_steady", "per engine: enrich steady rows/s ≥ 0.95× the ceiling's",
           "enrich", "ceiling", "steady_rows_per_s", "ge", 0.95, 2000),
    Target("machine_vs_ceiling_all_cores", "enrich-all-cores ≥ 0.95× as fast as ceiling-all-cores (wall to last row)",
           "ceiling-all-cores", "enrich-all-cores", "wall_to_last_row_s", "ge", 0.95, 2000),
    Target("machine_vs_peer_all_cores", "enrich-all-cores ≥ 1.2× faster than peer-all-cores (wall to last row)",
           "peer-all-cores", "enrich-all-cores", "wall_to_last_row_s", "ge", 1.2, 2000),
    Target("engine_start_vs_ceiling", "engine ready within 10 s of the ceiling's (launch → engine ready)",
           "enrich", "ceiling", "launch_to_engine_ready_s", "diff", 10.0, None),
    Target("machine_engine_start_vs_ceiling", "all engines ready within 10 s of ceiling-all-cores' (launch → all ready)",
           "enrich-all-cores", "ceiling-all-cores", "launch_to_all_engines_ready_s", "diff", 10.0, None),
    Target("small_machine_vs_ceiling_all_cores", "on 400 rows: enrich-all-cores wall ≤ 1.15× ceiling-all-cores'",
           "enrich-all-cores", "ceiling-all-cores", "wall_to_last_row_s", "le", 1.15, 400),
    Target("small_machine_vs_peer_all_cores", "on 400 rows: enrich-all-cores ≥ 1.2× faster than peer-all-cores",
           "peer-all-cores", "enrich-all-cores", "wall_to_last_row_s", "ge", 1.2, 400),
)  # fmt: skip


def judge(t: Target, summary: dict[str, Any], repeats: int) -> tuple[str, float | None, list[str]]:
    """met / missed from the medians; inconclusive when the run cannot carry the verdict."""
    value = t.value(summary)
    if value is None:
        return "inconclusive", None, ["not measured (a system missing or failed)"]
    notes = []
    for s in (t.a, t.b):
        st = summary[s]
        if st["runs_ok"] < st["runs"]:
            notes.append(f"{s}: {st['runs'] - st['runs_ok']} failed run(s)")
        if st["loaded_runs"]:
            notes.append(f"{s}: {st['loaded_runs']} run(s) started above the load limit")
        if st.get("idle_engine_runs"):  # absent from results.json files older than the flag
            notes.append(f"{s}: {st['idle_engine_runs']} run(s) decoded on fewer engines than started (counted)")
        if st["unpinned_runs"]:
            notes.append(f"{s}: engine settings not pinned (enrich's CLI lacks the flags)")
    if repeats < MIN_REPEATS:
        notes.append(f"{repeats} repeat(s) < {MIN_REPEATS}: no spread")
    bounds = t.bounds(summary)
    if bounds and t.met(bounds[0]) != t.met(bounds[1]):
        notes.append(f"the spread straddles the threshold ({bounds[1]:.3f} to {bounds[0]:.3f})")
    verdict = "met" if t.met(value) else "missed"
    return ("inconclusive" if notes else verdict), value, ([f"median says {verdict}"] if notes else []) + notes


def compute_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target at the row count it is defined for; all systems judged alike."""
    repeats = results["config"]["repeats"]
    out = []
    for t in TARGETS:
        sizes = [n for n in results["by_rows"] if t.rows is None or int(n) == t.rows]
        if not sizes:
            out.append({"key": t.key, "target": t.text, "rows": t.rows, "value": None, "status": "inconclusive",
                        "notes": [f"not run at {t.rows} rows"]})  # fmt: skip
        for n in sizes:
            status, value, notes = judge(t, results["by_rows"][n]["summary"], repeats)
            out.append({"key": t.key, "target": t.text, "rows": int(n), "value": value, "status": status, "notes": notes})
    return out
