"""Statistics over the repeats: per-system summaries (median, min–max), ratios of medians,
and the performance issue's targets judged on them."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from common import MACHINE, SYSTEMS

# Targets of the performance issue.
TARGET_CEILING_RATIO = 0.9
TARGET_PEER_SPEEDUP = 1.5  # peer wall / enrich wall, per machine
# Below these the targets are reported, but marked inconclusive.
CONCLUSIVE_MIN_ROWS = 1000
CONCLUSIVE_MIN_REPEATS = 3

# Metrics summarised per system: key -> (label, unit scale, digits).
METRICS: dict[str, tuple[str, float, int]] = {
    "wall_s": ("wall time (s)", 1.0, 1),
    "engine_start_s": ("engine start (s)", 1.0, 1),
    "launch_to_engine_ready_s": ("launch → engine ready (s)", 1.0, 1),
    "time_to_first_output_s": ("launch → first output rows (s)", 1.0, 1),
    "steady_rows_per_s": ("steady rows/s", 1.0, 2),
    "steady_tokens_per_s": ("steady output tok/s", 1.0, 1),
    "e2e_rows_per_s": ("end-to-end rows/s", 1.0, 2),
    "peak_rss_bytes": ("peak RSS of tree (GiB)", 1 / 2**30, 2),
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


def aggregate(runs: list[dict[str, Any]], systems: Sequence[str]) -> dict[str, Any]:
    summary = {}
    for system in systems:
        ok = [r for r in runs if r["system"] == system and r.get("ok")]
        summary[system] = {
            "runs_ok": len(ok),
            "runs": sum(r["system"] == system for r in runs),
            **{key: summarize(r.get(key) for r in ok) for key in METRICS},
        }
    c, p, e = (summary.get(s) for s in SYSTEMS[:3])  # ceiling, peer, enrich
    m = summary.get(MACHINE) or e  # the per-machine figure: all cores, else the one engine
    ratios = {
        "enrich_over_ceiling_steady_rows_per_s": ratio(e and e["steady_rows_per_s"], c and c["steady_rows_per_s"]),
        "enrich_over_ceiling_steady_tokens_per_s": ratio(
            e and e["steady_tokens_per_s"], c and c["steady_tokens_per_s"]
        ),
        "enrich_over_peer_wall_s": ratio(e and e["wall_s"], p and p["wall_s"]),
        "enrich_over_peer_steady_rows_per_s": ratio(e and e["steady_rows_per_s"], p and p["steady_rows_per_s"]),
        "machine_speedup_over_peer_wall_s": ratio(p and p["wall_s"], m and m["wall_s"]),
        "machine_over_peer_steady_rows_per_s": ratio(m and m["steady_rows_per_s"], p and p["steady_rows_per_s"]),
    }
    return {"summary": summary, "ratios": ratios}


def _overlap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a["min"] <= b["max"] and b["min"] <= a["max"])


def is_conclusive(cfg: dict[str, Any]) -> bool:
    """Enough rows for steady-state figures and enough repeats for a spread."""
    return cfg["rows"] >= CONCLUSIVE_MIN_ROWS and cfg["repeats"] >= CONCLUSIVE_MIN_REPEATS


def compute_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on medians; flagged when the run is too small to count
    or when the two systems' min–max ranges overlap."""
    cfg, summary, ratios = results["config"], results["summary"], results["ratios"]
    conclusive = is_conclusive(cfg)
    targets = []

    def add(name: str, value: float | None, met: bool | None, a: str, b: str, metric: str) -> None:
        notes = []
        if value is None:
            status = "not measured"
        else:
            status = "met" if met else "not met"
            if _overlap((summary.get(a) or {}).get(metric), (summary.get(b) or {}).get(metric)):
                notes.append("min–max ranges overlap")
            if not conclusive:
                notes.append(
                    f"inconclusive: {cfg['rows']} rows × {cfg['repeats']} repeats "
                    f"(needs ≥ {CONCLUSIVE_MIN_ROWS} rows, ≥ {CONCLUSIVE_MIN_REPEATS} repeats)"
                )
        targets.append({"target": name, "value": value, "status": status, "notes": notes})

    r = ratios.get("enrich_over_ceiling_steady_rows_per_s")
    add(f"enrich steady rows/s ≥ {TARGET_CEILING_RATIO}× raw vLLM", r,
        r is not None and r >= TARGET_CEILING_RATIO, "enrich", "ceiling", "steady_rows_per_s")
    r = ratios.get("enrich_over_ceiling_steady_tokens_per_s")
    add(f"enrich steady output tok/s ≥ {TARGET_CEILING_RATIO}× raw vLLM", r,
        r is not None and r >= TARGET_CEILING_RATIO, "enrich", "ceiling", "steady_tokens_per_s")
    machine = MACHINE if MACHINE in summary else "enrich"
    r = ratios.get("machine_speedup_over_peer_wall_s")
    add(f"per machine: wall time ≥ {TARGET_PEER_SPEEDUP}× shorter than Ray Data LLM (peer/{machine})", r,
        r is not None and r >= TARGET_PEER_SPEEDUP, machine, "peer", "wall_s")
    r = ratios.get("machine_over_peer_steady_rows_per_s")
    add(f"per machine: steady rows/s ahead of Ray Data LLM ({machine}/peer > 1)", r,
        r is not None and r > 1.0, machine, "peer", "steady_rows_per_s")
    return targets
