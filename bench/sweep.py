"""`--sweep`: the pinned scheduler settings tried per system, each system's best kept.

Every system gets the same candidates (max_num_seqs:max_num_batched_tokens pairs), one run each
on a small input, in a seeded random order; the best is the highest steady rows/s. The
measured repeats then give each system its own best, so none is compared at another's
setting and none is tuned alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inputs import pinned
from schedule import run_order

if TYPE_CHECKING:
    from harness import Bench

DEFAULT_CANDIDATES = "32:2048,64:2048,128:4096"


def parse_candidates(text: str) -> list[dict[str, int]]:
    """"64:2048,128:4096" -> [{"max_num_seqs": 64, "max_num_batched_tokens": 2048}, ...]."""
    out = []
    for item in text.split(","):
        seqs, _, tokens = item.strip().partition(":")
        if not tokens:
            raise ValueError(f"sweep value {item!r}: expected MAX_NUM_SEQS:MAX_NUM_BATCHED_TOKENS")
        out.append(pinned(int(seqs), int(tokens)))
    if not out:
        raise ValueError("no sweep values")
    return out


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run with the highest steady rows/s among those that finished."""
    ok = [r for r in runs if r.get("ok") and r.get("steady_rows_per_s")]
    return max(ok, key=lambda r: r["steady_rows_per_s"]) if ok else None


def run_sweep(
    bench: Bench, systems: Sequence[str], candidates: list[dict[str, int]], rows: int, seed: int,
    pinnable: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """One run per system and candidate; enrich sweeps only when its CLI takes the settings
    (else one run, recorded as unpinned)."""
    plan = []
    for system in systems:
        mine = candidates if not system.startswith("enrich") or pinnable else candidates[:1]
        plan += [(system, i) for i in range(len(mine))]
    runs = []
    for system, i in run_order(plan, 1, seed)[0]:
        rec = bench.run_system(system, i + 1, rows, candidates[i], sub="sweep")
        runs.append(rec)
    best = {}
    for system in systems:
        top = best_of([r for r in runs if r["system"] == system])
        best[system] = {
            "settings": top["settings"] if top else candidates[0],
            "steady_rows_per_s": top["steady_rows_per_s"] if top else None,
            "note": None if top else "no sweep run finished: the first candidate is used",
        }
    keep = ("system", "settings", "ok", "steady_rows_per_s", "wall_to_last_row_s", "loadavg_1m_before", "load_ok")
    return {
        "rows": rows,
        "seed": seed,
        "candidates": candidates,
        "runs": [{k: r.get(k) for k in keep} for r in runs],
        "best": best,
    }
