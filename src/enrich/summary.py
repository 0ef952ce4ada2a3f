"""Run summary: counts, rejects by reason, throughput, model and settings; JSON and text."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from enrich.commit import OutputCommitter
from enrich.config import JobConfig
from enrich.write import Lineage


class RunSummary(BaseModel):
    """What a run did (this run) and what the output holds (all committed shards)."""

    rows_in: int = Field(..., description="Rows this run read, as counted by the reader.")
    rows_ok: int = Field(..., description="Rows this run wrote to the enriched table (file counts).")
    rows_rejected: int = Field(..., description="Rows this run wrote to the rejects table (file counts).")
    invariant_ok: bool = Field(..., description="rows_in == rows_ok + rows_rejected: the reader's "
                               "counts against the written files' counts.")
    rejects_by_reason: dict[str, int] = Field(default_factory=dict)
    shards_total: int
    shards_processed: int
    shards_skipped: int = Field(..., description="Already committed with this fingerprint.")
    duplicates_dropped: int = Field(
        0, description="Deliveries dropped because their rows had arrived already (Ray re-ran a "
        "batch after an engine died), also late ones for an already committed shard."
    )
    bad_files: dict[str, str] = Field(
        default_factory=dict, description="Files skipped by --on-bad-file skip, with the problem."
    )
    output_rows_ok: int = Field(..., description="Enriched rows in the whole output.")
    output_rows_rejected: int = Field(..., description="Rejected rows in the whole output.")
    wall_seconds: float
    generate_seconds: float = Field(..., description="From the first finished batch to the end.")
    rows_per_second: float
    output_tokens: int
    output_tokens_per_second: float
    model: str
    model_revision: str | None
    task: str
    task_version: str
    fingerprint: str
    input: str
    output: str
    engine: dict[str, Any]
    sampling: dict[str, Any]
    engines: dict[str, Any] | None = Field(
        None,
        description="The run's engines (from the engine ledger): occupancy per engine (time-weighted "
        "running sequences / max_num_seqs) and overall, idle seconds between batches, engine deaths "
        "and their causes, restarts, re-run batches, start failures, poison rows. None when no "
        "engine ran (everything was already done).",
    )
    quality: dict[str, Any] | None = Field(
        None,
        description="Quality of the whole output (from _report/quality.json): validation pass "
        "rate, truncation rate, empty rate per output field, rows per attempt count (retries), "
        "tokens per row. None when the report could not be built.",
    )

    def human(self) -> str:
        lines = [
            f"enrich: task {self.task} v{self.task_version}, model {self.model}",
            f"  input   {self.input}  ({self.shards_processed} shards processed, "
            f"{self.shards_skipped} already done)",
            f"  output  {self.output}",
            f"  rows_in {self.rows_in} = rows_ok {self.rows_ok} + rows_rejected "
            f"{self.rows_rejected}  [{'OK' if self.invariant_ok else 'BROKEN'}]",
        ]
        for path, problem in self.bad_files.items():
            lines.append(f"  SKIPPED {path}: {problem}")
        if self.rejects_by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in self.rejects_by_reason.items())
            lines.append(f"  rejects {reasons}")
        lines.append(
            f"  {self.wall_seconds:.1f}s wall, {self.rows_per_second:.2f} rows/s, "
            f"{self.output_tokens_per_second:.1f} output tokens/s"
        )
        return "\n".join(lines)


def build_summary(
    cfg: JobConfig,
    lineage: Lineage,
    committer: OutputCommitter,
    started: float,
    first_batch: float | None,
) -> RunSummary:
    done = committer.committed
    rows_in = sum(m.rows_in for m in done)
    rows_ok = sum(m.rows_ok for m in done)
    rows_rejected = sum(m.rows_rejected for m in done)
    reasons: dict[str, int] = {}
    for m in done:
        for k, v in m.rejects_by_reason.items():
            reasons[k] = reasons.get(k, 0) + v
    tokens = sum(m.output_tokens for m in done)
    now = time.time()
    wall = now - started
    return RunSummary(
        rows_in=rows_in,
        rows_ok=rows_ok,
        rows_rejected=rows_rejected,
        invariant_ok=rows_in == rows_ok + rows_rejected,
        rejects_by_reason=dict(sorted(reasons.items())),
        shards_total=len(done) + len(committer.skipped) + len(committer.bad_files),
        shards_processed=len(done),
        shards_skipped=len(committer.skipped),
        bad_files=dict(committer.bad_files),
        duplicates_dropped=committer.duplicates_dropped + committer.late_dropped,
        output_rows_ok=rows_ok + sum(m.rows_ok for m in committer.skipped),
        output_rows_rejected=rows_rejected + sum(m.rows_rejected for m in committer.skipped),
        wall_seconds=round(wall, 3),
        generate_seconds=round(now - first_batch, 3) if first_batch else 0.0,
        rows_per_second=round(rows_in / wall, 3) if wall else 0.0,
        output_tokens=tokens,
        output_tokens_per_second=round(tokens / wall, 3) if wall else 0.0,
        model=lineage.model,
        model_revision=lineage.model_revision,
        task=lineage.task,
        task_version=lineage.task_version,
        fingerprint=lineage.fingerprint,
        input=cfg.input,
        output=cfg.output,
        engine=cfg.engine.model_dump(),
        sampling=cfg.sampling.model_dump(),
    )
