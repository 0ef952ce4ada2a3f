"""From a finished run (its process record and its own result) to the benchmark's numbers:
engine start, first output, steady rates; and each run's record and its agreement with the
ceiling's outputs."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import ENGINE_START_METHOD
from inputs import read_rows
from monitor import ProcResult

# Rows whose completion stamp lies within this of the first one count as "the first output".
FIRST_OUTPUT_TOLERANCE_S = 0.25

PROGRESS_RE = re.compile(r"progress: (\d+) rows")
# vLLM's EngineCore logs this once its weights, KV cache and warm-up are done: the same
# signal in all three systems (forwarded by Ray from actors to the driver's stderr).
ENGINE_INIT_RE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s")
# Ray Data LLM's engine actor logs this once per batch it finished, with the actor's pid
# (and its node's ip on a multi-node cluster) and the batch's rows.
PEER_BATCH_RE = re.compile(
    r"\(MapWorker\(MapBatches\(vLLMEngineStageUDF\)\) pid=(\d+)(?:, ip=[^)]*)?\)"
    r".*Elapsed time for batch \S+ with size (\d+)"
)


def steady_from_stamps(
    stamps: Sequence[float], t_end: float, tokens: Sequence[int] | None = None,
    tolerance: float = FIRST_OUTPUT_TOLERANCE_S,
) -> dict[str, Any]:
    """From per-row completion stamps: first output time, rows counted as the first output
    (within `tolerance` of it), and the steady rates of the rest over [first, t_end]."""
    if not stamps:
        return {"t_first": None, "first_rows": 0, "steady_rows": 0, "window_s": None,
                "steady_rows_per_s": None, "steady_tokens_per_s": None}
    t_first = min(stamps)
    first = [i for i, s in enumerate(stamps) if s - t_first <= tolerance]
    steady_rows = len(stamps) - len(first)
    window = t_end - t_first
    steady_tokens = None
    if tokens is not None:
        first_set = set(first)
        steady_tokens = sum(t for i, t in enumerate(tokens) if i not in first_set)
    ok = steady_rows > 0 and window > 0
    return {
        "t_first": t_first,
        "first_rows": len(first),
        "steady_rows": steady_rows,
        "window_s": window,
        "steady_rows_per_s": steady_rows / window if ok else None,
        "steady_tokens_per_s": steady_tokens / window if ok and steady_tokens is not None else None,
    }


def first_progress_rows(line: str | None) -> int | None:
    match = PROGRESS_RE.search(line or "")
    return int(match.group(1)) if match else None


def engine_ready_at(proc: ProcResult) -> float | None:
    """Arrival time of vLLM's first "init engine ... took" line, if any."""
    match = proc.matches.get("engine_init")
    return match[0] if match else None


def rates(rows: int, tokens: int, t_from: float | None, t_to: float) -> dict[str, Any]:
    """Rows and output tokens per second over [t_from, t_to]."""
    window = t_to - t_from if t_from is not None else None
    ok = window is not None and window > 0 and rows > 0
    return {
        "generate_s": window,
        "steady_rows_per_s": rows / window if ok else None,
        "steady_tokens_per_s": tokens / window if ok else None,
    }


def measure_ceiling(proc: ProcResult, res: dict[str, Any]) -> dict[str, Any]:
    """Engine start = LLM() construction; steady window = engine ready (vLLM's log line,
    else LLM() returning) → generate() returned. All rows are generated after that."""
    t_log = engine_ready_at(proc)
    t_ready = t_log or res["t_ready"]
    call = res["t_done"] - res["t_ready"]
    return {
        # ceiling-all-cores reports its slowest engine's LLM() itself
        "engine_start_s": res.get("engine_start_s") or res["t_ready"] - res["t_imported"],
        "wall_to_last_row_s": res["t_written"] - proc.t_launch,
        "launch_to_engine_ready_s": t_ready - proc.t_launch,
        "engine_ready_source": "vllm log line" if t_log else "LLM() returned",
        "prepare_s": res["t_prepared"] - res["t_start"],
        "rows": res["rows"],
        "output_tokens": res["output_tokens"],
        "steady_rows": res["rows"],
        **rates(res["rows"], res["output_tokens"], t_ready, res["t_done"]),
        "generate_call_s": call,
        "generate_call_rows_per_s": res["rows"] / call if call > 0 else None,
        "time_to_first_output_s": None,  # generate() returns every row at once
        "prompt_tokens_mean": res["prompt_tokens_mean"],
    }


def measure_peer(proc: ProcResult, res: dict[str, Any]) -> dict[str, Any]:
    """Engine start = launch → vLLM's engine-ready log line; steady window = that line → end
    of write_parquet. Without the line: first output stamp, and the rows of the first
    output left out (steady_from_stamps)."""
    first = steady_from_stamps(res["stamps"], res["t_written"], res["tokens"])
    t_log = engine_ready_at(proc)
    rec = {
        "ray_init_s": res["t_ray"] - proc.t_launch,
        "wall_to_last_row_s": res["t_written"] - proc.t_launch,
        "time_to_first_output_s": first["t_first"] - proc.t_launch if first["t_first"] else None,
        "first_output_rows": first["first_rows"],
        "rows": res["rows"],
        "output_tokens": res["output_tokens"],
        "prompt_tokens_mean": res["prompt_tokens_mean"],
    }
    if t_log:
        rec.update(engine_start_s=t_log - proc.t_launch, engine_ready_source="vllm log line", steady_rows=res["rows"])
        rec.update(rates(res["rows"], res["output_tokens"], t_log, res["t_written"]))
    else:
        rec.update(
            engine_start_s=rec["time_to_first_output_s"],
            engine_ready_source="first output (no vllm log line)",
            steady_rows=first["steady_rows"],
            generate_s=first["window_s"],
            steady_rows_per_s=first["steady_rows_per_s"],
            steady_tokens_per_s=first["steady_tokens_per_s"],
        )
    rec["launch_to_engine_ready_s"] = rec["engine_start_s"]
    rec.update(decoding(peer_rows_per_engine(proc.log_path)))
    return rec


def measure_enrich(proc: ProcResult, summary: dict[str, Any], summary_at: float) -> dict[str, Any]:
    """Engine start = launch → vLLM's engine-ready log line; steady window = that line → the
    summary (written after the last shard's commit). Without the line: the first progress
    line (the driver's first batch), leaving its rows out."""
    rows, tokens = summary["rows_in"], summary.get("output_tokens", 0)
    t_progress, line = proc.matches.get("progress", (None, None))
    first_rows = first_progress_rows(line)
    t_log = engine_ready_at(proc)
    rec = {
        "time_to_first_output_s": t_progress - proc.t_launch if t_progress else None,
        "first_output_rows": first_rows,
        "rows": rows,
        "rows_ok": summary.get("rows_ok"),
        "rows_rejected": summary.get("rows_rejected"),
        "rejects_by_reason": summary.get("rejects_by_reason"),
        "output_tokens": tokens,
        "summary_wall_s": summary.get("wall_seconds"),
        "summary_generate_s": summary.get("generate_seconds"),
        **decoding(enrich_rows_per_engine(summary)),
        # Per engine: fullness, active and idle seconds, requests (src/enrich/engine_stats.py).
        "engine_stats": (summary.get("engines") or {}).get("engines"),
    }
    if t_log:
        rec.update(engine_start_s=t_log - proc.t_launch, engine_ready_source="vllm log line", steady_rows=rows)
        rec.update(rates(rows, tokens, t_log, summary_at))
    else:
        steady_rows = rows - first_rows if first_rows is not None else 0
        # Tokens are not reported per batch: the steady share is taken pro rata.
        steady_tokens = tokens * steady_rows // rows if rows else 0
        rec.update(
            engine_start_s=rec["time_to_first_output_s"],
            engine_ready_source="first progress line (no vllm log line)",
            steady_rows=steady_rows,
        )
        rec.update(rates(steady_rows, steady_tokens, t_progress, summary_at))
    rec["launch_to_engine_ready_s"] = rec["engine_start_s"]
    return rec


def peer_rows_per_engine(log_path: str | Path) -> list[int] | None:
    """Rows each of the peer's engine actors finished (by pid; a restarted actor gets a new
    pid and counts as another engine), largest first; None without a log."""
    if not Path(log_path).is_file():
        return None
    rows: Counter[str] = Counter()
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if m := PEER_BATCH_RE.search(line):
                rows[m.group(1)] += int(m.group(2))
    return sorted(rows.values(), reverse=True)


def enrich_rows_per_engine(summary: dict[str, Any]) -> list[int] | None:
    """Requests each of enrich's engine actors served (`_summary.json`), largest first. The
    summary keys engines `<actor id>#<start>`: a restarted engine is the same actor."""
    engines = (summary.get("engines") or {}).get("engines")
    if engines is None:
        return None
    rows: Counter[str] = Counter()
    for key, e in engines.items():
        rows[key.split("#")[0]] += int(e.get("requests", 0))
    return sorted(rows.values(), reverse=True)


def decoding(rows_per_engine: list[int] | None) -> dict[str, Any]:
    """The record's fields: rows per engine, and how many engines decoded any."""
    if rows_per_engine is None:
        return {"rows_per_engine": None, "decoding_engines": None}
    return {"rows_per_engine": rows_per_engine, "decoding_engines": sum(1 for r in rows_per_engine if r > 0)}


def distinct_outputs(outputs: dict[str, Any]) -> int:
    """How many different outputs the rows got. A random model can answer every row alike,
    and then agreeing with the ceiling says little: the report shows this next to it."""
    return len({json.dumps(v, sort_keys=True, ensure_ascii=False) for v in outputs.values()})


def agreement_check(reference: dict[str, str], candidate: dict[str, Any]) -> dict[str, Any]:
    return {
        "same_as_ceiling": agreement(reference, candidate),
        "rows": len(candidate),
        "distinct_outputs": distinct_outputs(candidate) if candidate else None,
    }


def last_row_written_at(output: Path) -> float | None:
    """mtime of the last data file written (enriched or rejects): the end of 'launch to last row'."""
    times = [p.stat().st_mtime for p in output.rglob("*.parquet")]
    return max(times) if times else None


def agreement(reference: dict[str, str], candidate: dict[str, Any]) -> float | None:
    """Share of rows whose output equals the ceiling's (texts, or parsed JSON for enrich)."""
    if not reference or not candidate:
        return None
    same = 0
    for rid, ref in reference.items():
        got = candidate.get(rid)
        if isinstance(got, dict):
            try:
                same += json.loads(ref) == got
            except ValueError:
                continue
        else:
            same += got == ref
    return same / len(reference)


def read_outputs_jsonl(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {r["id"]: r["text"] for r in read_rows(path)}


def read_enrich_outputs(out_dir: Path) -> dict[str, Any]:
    """Row id -> parsed fields (enriched rows) or raw output (rejects)."""
    import pyarrow.parquet as pq

    from enrich.tasks.address import AddressRecord

    fields = list(AddressRecord.model_fields)
    got: dict[str, Any] = {}
    try:
        ok = pq.read_table(str(out_dir))
        if ok.num_rows:
            for row in ok.select(["enrich_row_id", *fields]).to_pylist():
                got[row.pop("enrich_row_id")] = row
    except Exception:  # noqa: BLE001 - no enriched file when every row was rejected
        pass
    rejects = out_dir / "_rejects"
    if rejects.exists():
        bad = pq.read_table(str(rejects), columns=["row_id", "raw_output"])
        got.update(zip(bad.column("row_id").to_pylist(), bad.column("raw_output").to_pylist()))
    return got


def base_record(system: str, proc: ProcResult) -> dict[str, Any]:
    return {
        "system": system,
        "ok": proc.returncode == 0 and not proc.timed_out,
        "returncode": proc.returncode,
        "timed_out": proc.timed_out,
        "wall_s": proc.wall_s,
        "t_launch": proc.t_launch,
        "t_exit": proc.t_exit,
        "engine_start_method": ENGINE_START_METHOD[system],
        "peak_rss_bytes": proc.peak_rss_bytes,
        "peak_procs": proc.peak_procs,
        "rss_samples": proc.rss_samples,
        "leftover_procs": proc.leftover_procs,
        "engine_init_times": proc.match_times.get("engine_init", []),
        "log": proc.log_path,
        "cmd": shlex.join(proc.cmd),
    }


def short_line(rec: dict[str, Any]) -> str:
    if not rec.get("ok"):
        return f"FAILED (rc {rec.get('returncode')}), see {rec.get('log')}"
    parts = [f"wall {rec['wall_s']:.1f}s"]
    if rec.get("wall_to_last_row_s") is not None:
        parts.append(f"to last row {rec['wall_to_last_row_s']:.1f}s")
    for key, label in (("engine_start_s", "engine start"), ("steady_rows_per_s", "steady rows/s"),
                       ("steady_tokens_per_s", "steady tok/s")):
        if rec.get(key) is not None:
            parts.append(f"{label} {rec[key]:.2f}")
    parts.append(f"peak RSS {rec['peak_rss_bytes'] / 2**30:.2f} GiB")
    if rec.get("idle_engines"):
        parts.append(f"{rec['idle_engines']} engine(s) decoded nothing")
    return ", ".join(parts)
