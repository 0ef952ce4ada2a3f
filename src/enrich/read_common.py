"""Pieces every reader shares: row lineage columns and appending working columns."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.discover import ShardInfo


def lineage(shard: ShardInfo, start: int, n: int, ids: list[Any] | None) -> dict[str, pa.Array]:
    indexes = list(range(start, start + n))
    derived = [f"{shard.shard_id}-{i}" for i in indexes]
    # A row without its id (e.g. an unparseable line) still gets the derived one.
    row_ids = derived if ids is None else [d if i is None else str(i) for i, d in zip(ids, derived)]
    return {
        C.ROW_ID: pa.array(row_ids, pa.string()),
        C.SOURCE_FILE: pa.array([shard.url] * n, pa.string()),
        C.ROW_INDEX: pa.array(indexes, pa.int64()),
        C.SHARD_ROWS: pa.array([-1] * n, pa.int64()),
    }


def with_columns(table: pa.Table, extra: dict[str, pa.Array]) -> pa.Table:
    if table.num_columns == 0:  # e.g. a chunk of only unparseable lines
        return pa.table(extra)
    for name, values in extra.items():
        table = table.append_column(name, values)
    return table
