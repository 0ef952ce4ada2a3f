"""Run report: OUTPUT/_report/{report.md, quality.json, *.png}, from the manifests' counters.

`_report` starts with `_`, so Parquet dataset readers of OUTPUT skip it (like `_rejects`).
Quality metrics cover the whole output (every manifest passed), the "this run" numbers come
from the RunSummary and the progress timeline. Also the Markdown helpers `enrich.eval.runner`
uses; the plots are in `enrich.plots`.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.spec import AbstractFileSystem

from enrich.plots import grouped_bars_png, histogram_png, stacked_barh_png, throughput_png, token_lengths_png
from enrich.summary import RunSummary
from enrich.quality import QualityCounters, histogram_stats
from enrich.write import ShardManifest, arrow_fs

REPORT_DIR = "_report"
MAX_SHARD_BARS = 40  # more shards: a histogram of per-shard reject rates instead of bars
MAX_SHARD_ROWS = 50  # shards listed in report.md, worst reject rate first
# Rejects whose row got a model output that was then checked (the validation pass rate's base).
GENERATED_REJECTS = ("truncated", "invalid_json", "schema_violation", "domain_check")
# The quality figures also copied into _summary.json (the timeline and per-shard detail stay here).
SUMMARY_QUALITY = (
    "validation_pass_rate", "truncation_rate", "empty_rate", "rows_by_attempts", "retried_rows",
    "reject_rate_by_reason", "tokens_per_row",
)


# ---------------------------------------------------------------- markdown and files
def md_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
    return value.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def put(fs: AbstractFileSystem, path: str, data: bytes | str) -> None:
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, data.encode("utf-8") if isinstance(data, str) else data)


def iter_batches(
    fs: AbstractFileSystem, root: str, files: Iterable[str], columns: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    """The named columns (those a file has) of the output's Parquet files, batch by batch
    (for the eval report, which compares an output with a gold set)."""
    afs = arrow_fs(fs)
    for rel in files:
        with pq.ParquetFile(posixpath.join(root, rel), filesystem=afs) as pf:
            cols = [c for c in columns if c in pf.schema_arrow.names]
            if cols:
                yield from pf.iter_batches(columns=cols)


# ---------------------------------------------------------------- quality
def quality_metrics(manifests: Sequence[ShardManifest], output_fields: Sequence[str]) -> dict[str, Any]:
    """Rates over the whole output, merged from the manifests' counters: the output is never
    re-read, and the driver's memory is bounded by the histograms, not by the rows."""
    q = QualityCounters.total(m.quality for m in manifests)
    rows_in = sum(m.rows_in for m in manifests)
    rows_ok = sum(m.rows_ok for m in manifests)
    reasons: Counter[str] = Counter()
    for m in manifests:
        reasons.update(m.rejects_by_reason)
    empty = {f: q.empty_fields.get(f, 0) for f in output_fields}
    by_attempts = {a: n for a, n in sorted(q.rows_by_attempts.items(), key=lambda kv: int(kv[0]))}
    generated = rows_ok + sum(reasons[r] for r in GENERATED_REJECTS)
    tokens = sum(m.output_tokens for m in manifests)
    return {
        "shards": len(manifests),
        "rows_in": rows_in,
        "rows_ok": rows_ok,
        "rows_rejected": sum(m.rows_rejected for m in manifests),
        "ok_rate": ratio(rows_ok, rows_in),
        "validation_pass_rate": ratio(rows_ok, generated),
        "rows_generated": generated,
        "truncation_rate": ratio(reasons["truncated"], rows_in),
        "rejects_by_reason": dict(sorted(reasons.items())),
        "reject_rate_by_reason": {r: ratio(n, rows_in) for r, n in sorted(reasons.items())},
        "empty_rows": dict(empty),
        "empty_rate": {f: ratio(n, rows_ok) for f, n in empty.items()},
        # Generations per row, ok and rejected (0: rejected before the engine); > 1 = retried.
        "rows_by_attempts": by_attempts,
        "retried_rows": sum(n for a, n in by_attempts.items() if int(a) > 1),
        "output_tokens": tokens,
        "output_tokens_per_row": ratio(tokens, rows_in),
        "tokens_per_row": {"prompt": histogram_stats(q.prompt_tokens), "output": histogram_stats(q.output_tokens)},
        "_token_lengths": {"prompt": q.prompt_tokens, "output": q.output_tokens},  # histograms, for the plot
    }


# ---------------------------------------------------------------- the run report
def write_run_report(
    fs: AbstractFileSystem, root: str, summary: RunSummary, manifests: Sequence[ShardManifest],
    output_fields: Sequence[str] = (), folder: str = REPORT_DIR,
    timeline: Sequence[tuple[float, int, int]] = (),
) -> dict[str, Any]:
    """Write ROOT/_report/: PNGs and quality.json first, report.md last. Returns the metrics.

    `manifests`: every committed shard of the output (this run's and skipped ones);
    `output_fields`: the task's written columns, for their empty rates;
    `timeline`: this run's (seconds, rows, output tokens) progress points, cumulative.
    """
    q = quality_metrics(manifests, output_fields)
    lengths = q.pop("_token_lengths")
    q["timeline"] = [list(p) for p in timeline]
    base = posixpath.join(root.rstrip("/"), folder)
    shards = sorted(manifests, key=lambda m: m.source)
    cut = posixpath.commonprefix([m.source for m in shards]).rfind("/") + 1  # drop the common folder
    names = [m.source[cut:] for m in shards]
    reasons = q["rejects_by_reason"]
    put(fs, f"{base}/reject_reasons.png", grouped_bars_png(
        list(reasons), {"rows": list(reasons.values())}, xlabel="reject reason", ylabel="rows",
        title=f"Rejected rows by reason ({q['rows_rejected']} of {q['rows_in']})"))
    if len(shards) <= MAX_SHARD_BARS:
        shard_png = stacked_barh_png(
            names, {"ok": [m.rows_ok for m in shards], "rejected": [m.rows_rejected for m in shards]},
            title="Rows per input shard", xlabel="rows", ylabel="input shard")
    else:
        shard_png = histogram_png(
            [100 * m.rows_rejected / m.rows_in for m in shards if m.rows_in], 20, span=(0, 100),
            title=f"Reject rate per input shard ({len(shards)} shards)", xlabel="reject rate (%)", ylabel="shards")
    put(fs, f"{base}/shards.png", shard_png)
    fields = list(q["empty_rate"]) if q["rows_ok"] else []  # no ok rows: no rates to draw
    put(fs, f"{base}/empty_fields.png", grouped_bars_png(
        fields, {"empty": [100 * (q["empty_rate"][f] or 0) for f in fields]}, ymax=100, fmt="{:.1f}",
        title=f"Empty output fields (share of {q['rows_ok']} ok rows)", xlabel="output column",
        ylabel="empty rows (%)"))
    put(fs, f"{base}/throughput.png", throughput_png(timeline))
    put(fs, f"{base}/token_lengths.png", token_lengths_png(lengths["prompt"], lengths["output"]))
    put(fs, f"{base}/quality.json", json.dumps(q, indent=2, ensure_ascii=False))
    put(fs, f"{base}/report.md", _markdown(summary, q, shards, names))
    return q


def _markdown(s: RunSummary, q: dict[str, Any], shards: Sequence[ShardManifest], names: Sequence[str]) -> str:
    n, ok = q["rows_in"], q["rows_ok"]
    reasons = q["rejects_by_reason"]
    worst = sorted(zip(names, shards), key=lambda x: -(x[1].rows_rejected / x[1].rows_in if x[1].rows_in else 0))
    parts = [
        f"# Run report: {s.task} v{s.task_version}",
        f"Model `{s.model}`" + (f" @ `{s.model_revision}`" if s.model_revision else "")
        + f", fingerprint `{s.fingerprint}`.  \nInput `{s.input}` → output `{s.output}`.",
        "## This run",
        md_table(["rows_in", "rows_ok", "rows_rejected", "invariant", "shards processed", "shards skipped",
                  "wall (s)", "rows/s", "output tokens/s"],
                 [[s.rows_in, s.rows_ok, s.rows_rejected, "OK" if s.invariant_ok else "BROKEN",
                   s.shards_processed, s.shards_skipped, s.wall_seconds, s.rows_per_second,
                   s.output_tokens_per_second]]),
        _engines_md(s.engines),
        f"## Quality (whole output: {q['shards']} shard{'s' * (q['shards'] != 1)})",
        md_table(["metric", "value", "rows"], [
            ["ok rate (rows_ok / rows_in)", pct(ok, n), f"{ok} / {n}"],
            ["validation pass rate (rows_ok / rows with a model output)", pct(ok, q["rows_generated"]),
             f"{ok} / {q['rows_generated']}"],
            ["truncation rate (truncated / rows_in)", pct(reasons.get("truncated", 0), n),
             f"{reasons.get('truncated', 0)} / {n}"],
            ["output tokens per row (all attempts)", f"{q['output_tokens_per_row'] or 0:.1f}",
             f"{q['output_tokens']} tokens"],
        ]),
        "### Empty output fields (null, \"\" or empty list; share of ok rows)",
        md_table(["field", "empty rows", "rate"], [[f, c, pct(c, ok)] for f, c in q["empty_rows"].items()])
        if q["empty_rows"] else "(no output fields given)",
        "![empty output fields](empty_fields.png)",
        "## Rejects by reason",
        md_table(["reason", "rows", "share of rows_in"], [[r, c, pct(c, n)] for r, c in reasons.items()])
        if reasons else "No rejected rows.",
        "![rejects by reason](reject_reasons.png)",
        "### Rows by attempts (generations a row took; 0: rejected before the engine)",
        md_table(["attempts", "rows"], q["rows_by_attempts"].items()) if q["rows_by_attempts"] else "No rows.",
        f"## Shards (worst reject rate first{f', first {MAX_SHARD_ROWS}' if len(shards) > MAX_SHARD_ROWS else ''})",
        md_table(["shard", "rows_in", "rows_ok", "rows_rejected", "reject rate", "output tokens"],
                 [[name, m.rows_in, m.rows_ok, m.rows_rejected, pct(m.rows_rejected, m.rows_in), m.output_tokens]
                  for name, m in worst[:MAX_SHARD_ROWS]]),
        "![rows per shard](shards.png)",
        "## Throughput over time (this run)",
        "Rows and output tokens per second as rows reached the writer, averaged over equal "
        "time buckets, from the start of processing (the engines' start is the flat start).",
        "![throughput over time](throughput.png)",
        "## Tokens per row (whole output, ok and rejected rows)",
        md_table(["tokens", "rows", "mean", "p50", "p95", "max"],
                 [[kind, *(st[k] for k in ("rows", "mean", "p50", "p95", "max"))]
                  for kind, st in q["tokens_per_row"].items() if st])
        if any(q["tokens_per_row"].values()) else "No token counts recorded.",
        "![tokens per row](token_lengths.png)",
    ]
    return "\n\n".join(parts) + "\n"


def _engines_md(engines: dict[str, Any] | None) -> str:
    """How full the engines were (time-weighted running sequences / max_num_seqs) and their churn."""
    if not engines:
        return "## Engines\nNo engine ran in this run."
    rows = [[name, e.get("occupancy"), e.get("idle_seconds"), e.get("source", "")]
            for name, e in sorted(engines.get("engines", {}).items())]
    churn = (f"deaths {engines.get('engine_deaths', 0)}, restarts {engines.get('restarts', 0)}, "
             f"re-run batches {engines.get('rerun_batches', 0)}, poison rows {len(engines.get('poison_rows', []))}")
    return "\n".join([
        f"## Engines (occupancy {engines.get('occupancy')}; {churn})",
        md_table(["engine", "occupancy", "idle s between batches", "source"], rows) if rows else "",
    ])
