"""Quality counters: mergeable per-file tallies that travel in manifests instead of rows.

The writer counts what it wrote (per file pair); the driver adds the counts of a shard's
files into its manifest; the run report adds the manifests' counts. Nothing is re-read, and
the size of a counter is bounded by the token budget, never by the number of rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    total = Counter(a)
    total.update(b)
    return dict(sorted(total.items(), key=lambda kv: (len(kv[0]), kv[0])))


def _tally(values: Iterable[int | None]) -> dict[str, int]:
    return {str(k): n for k, n in Counter(v for v in values if v is not None).items()}


class QualityCounters(BaseModel):
    """Counts over a set of written rows (a file pair, a shard, a whole output); `+` merges."""

    rows_ok: int = Field(0, description="Rows in the enriched files.")
    rows_rejected: int = Field(0, description="Rows in the rejects files.")
    rejects_by_reason: dict[str, int] = Field(default_factory=dict, description="Reject reason -> rows.")
    rows_by_attempts: dict[str, int] = Field(
        default_factory=dict, description="Generations a row took (0: rejected before the engine) -> rows."
    )
    empty_fields: dict[str, int] = Field(
        default_factory=dict, description="Output column -> enriched rows where it is null, '' or []."
    )
    prompt_tokens: dict[str, int] = Field(default_factory=dict, description="Prompt length in tokens -> rows.")
    output_tokens: dict[str, int] = Field(
        default_factory=dict, description="Generated tokens of a row (all attempts) -> rows."
    )

    def __add__(self, other: QualityCounters) -> QualityCounters:
        return QualityCounters(
            rows_ok=self.rows_ok + other.rows_ok,
            rows_rejected=self.rows_rejected + other.rows_rejected,
            rejects_by_reason=_add(self.rejects_by_reason, other.rejects_by_reason),
            rows_by_attempts=_add(self.rows_by_attempts, other.rows_by_attempts),
            empty_fields=_add(self.empty_fields, other.empty_fields),
            prompt_tokens=_add(self.prompt_tokens, other.prompt_tokens),
            output_tokens=_add(self.output_tokens, other.output_tokens),
        )

    @classmethod
    def total(cls, parts: Iterable[QualityCounters]) -> QualityCounters:
        out = cls()
        for part in parts:
            out = out + part
        return out

    @property
    def output_tokens_sum(self) -> int:
        return sum(int(k) * n for k, n in self.output_tokens.items())

    @classmethod
    def of(cls, enriched: pa.Table, rejects: pa.Table, output_fields: Sequence[str]) -> QualityCounters:
        """Counters of one enriched table (enriched schema) and one rejects table (REJECTS_SCHEMA)."""
        ok_attempts = _column(enriched, "enrich_attempts")
        bad_attempts = _column(rejects, "attempts")
        empty = {f: _empty_count(enriched.column(f)) for f in output_fields if f in enriched.column_names}
        return cls(
            rows_ok=enriched.num_rows,
            rows_rejected=rejects.num_rows,
            rejects_by_reason=_tally(_column(rejects, "reason")),  # type: ignore[arg-type]
            rows_by_attempts=_add(_tally(ok_attempts), _tally(bad_attempts)),
            empty_fields=empty,
            prompt_tokens=_add(
                _tally(_column(enriched, "enrich_prompt_tokens")), _tally(_column(rejects, "prompt_tokens"))
            ),
            output_tokens=_add(
                _tally(_column(enriched, "enrich_output_tokens")), _tally(_column(rejects, "output_tokens"))
            ),
        )


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else []


def _empty_count(values: pa.ChunkedArray | pa.Array) -> int:
    """Nulls, "" and empty lists."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        mask = pc.equal(values, "")
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        mask = pc.equal(pc.list_value_length(values), 0)
    else:
        return values.null_count
    return int(pc.sum(pc.or_(pc.fill_null(mask, False), values.is_null())).as_py() or 0)


def histogram_stats(hist: Mapping[str, int]) -> dict[str, float] | None:
    """rows, mean, p50, p95, max of a value -> rows histogram (exact: the keys are the values)."""
    items = sorted((int(k), n) for k, n in hist.items() if n)
    rows = sum(n for _, n in items)
    if not rows:
        return None

    def at(q: float) -> int:
        rank, seen = min(rows - 1, int(q * rows)), 0
        for value, n in items:
            seen += n
            if seen > rank:
                return value
        return items[-1][0]

    mean = sum(v * n for v, n in items) / rows
    return {"rows": rows, "mean": round(mean, 1), "p50": at(0.5), "p95": at(0.95), "max": items[-1][0]}
