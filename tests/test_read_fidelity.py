"""Input fidelity (issue 12): every value of every input column survives the read, one
run-wide schema for the input columns, streamed Parquet row groups, inputs read at the
version recorded when listing. Fast: no engine, no Ray."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.read import SHARD_END, InputError, ShardInfo, discover_shards, passthrough_schema, read_shard


def cfg_for(folder: Path, tmp_path: Path, **extra: Any) -> JobConfig:
    return JobConfig.model_validate(
        {"input": str(folder), "output": str(tmp_path / "out"), "model": "unused", **extra}
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def inputs(table: pa.Table) -> pa.Table:
    return table.select([n for n in table.column_names if not n.startswith("_enrich_")])


def data_rows(chunks: list[pa.Table]) -> list[pa.Table]:
    """The chunks without the end-of-shard marker rows (the reader's count, not input rows)."""
    return [c.filter(pc.invert(pc.fill_null(pc.equal(c.column(C.REASON), SHARD_END), False))) for c in chunks]


def read_run(cfg: JobConfig) -> tuple[pa.Schema | None, list[pa.Table]]:
    """Plan like the pipeline (listing, run-wide schema), then read every shard."""
    shards = discover_shards(cfg)
    schema = passthrough_schema(shards, cfg)
    return schema, data_rows([chunk for s in shards for chunk in read_shard(s, cfg, schema)])


# ---------------------------------------------------------------- 1. columns dropped
def test_key_missing_from_chunk_first_row_is_kept(tmp_path: Path) -> None:
    """`from_pylist` named the columns after the first row: `zip` was dropped for the chunk."""
    f = write_lines(tmp_path / "in" / "a.jsonl", [
        json.dumps({"text": "a"}),
        json.dumps({"text": "b", "zip": "310000"}),
        json.dumps({"text": "c", "zip": "100000", "note": "x"}),
    ])
    chunks = data_rows(list(read_shard(ShardInfo(str(f), "jsonl", 0, ""), cfg_for(f, tmp_path))))
    table = pa.concat_tables(chunks, promote_options="default")
    assert table.column("zip").to_pylist() == [None, "310000", "100000"]
    assert table.column("note").to_pylist() == [None, None, "x"]


def test_garbage_first_line_keeps_the_other_rows_columns(tmp_path: Path) -> None:
    """An unparseable first line made the chunk carry no input column at all."""
    f = write_lines(tmp_path / "in" / "a.jsonl", [
        "not json",
        json.dumps({"text": "b", "order_id": "B1"}),
    ])
    table = pa.concat_tables(data_rows(list(read_shard(ShardInfo(str(f), "jsonl", 0, ""), cfg_for(f, tmp_path)))),
                             promote_options="default")
    assert table.column("order_id").to_pylist() == [None, "B1"]
    assert table.column("text").to_pylist() == [None, "b"]
    assert table.column(C.REASON).to_pylist() == ["bad_input", None]
    assert table.column(C.MESSAGE).to_pylist()[0].startswith(f"{f}:1:1: invalid JSON")


# ---------------------------------------------------------------- 2. one run-wide schema
def test_jsonl_run_schema_is_every_key_as_string(tmp_path: Path) -> None:
    """Columns missing from first lines, garbage first lines and drifting types across shards
    and chunks: one schema for every chunk, every value kept (JSON text for non-strings)."""
    folder = tmp_path / "in"
    write_lines(folder / "a.jsonl", [
        "{garbage",
        json.dumps({"text": "a1"}),
        json.dumps({"text": "a2", "zip": 310000}),
        json.dumps({"text": "a3", "zip": "31000X", "tags": ["x", 1]}),
    ])
    write_lines(folder / "b.jsonl", [
        json.dumps({"text": "b1", "flag": True, "zip": None}),
        json.dumps({"text": "b2", "meta": {"k": 1.5}}),
    ])
    cfg = cfg_for(folder, tmp_path, read_chunk_rows=2)
    schema, chunks = read_run(cfg)
    assert schema is not None
    assert set(schema.names) == {"text", "zip", "tags", "flag", "meta"}
    assert all(f.type == pa.string() for f in schema)
    for chunk in chunks:
        assert inputs(chunk).schema.equals(schema), chunk.schema
    table = pa.concat_tables(chunks)  # no promotion needed: the schemas are equal
    assert table.column("zip").to_pylist() == [None, None, "310000", "31000X", None, None]
    assert table.column("tags").to_pylist() == [None, None, None, '["x", 1]', None, None]
    assert table.column("flag").to_pylist() == [None, None, None, None, "true", None]
    assert table.column("meta").to_pylist() == [None, None, None, None, None, '{"k": 1.5}']


def test_parquet_footer_types_unify_across_files(tmp_path: Path) -> None:
    """int32 + int64 -> int64; a column only some files have is null in the others; a column
    whose types cannot be unified is string (strings as is, other values as JSON text)."""
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({
        "text": ["a"], "n": pa.array([1], pa.int32()), "odd": pa.array([7], pa.int64()),
    }), folder / "a.parquet")
    pq.write_table(pa.table({
        "text": ["b"], "n": pa.array([2**40], pa.int64()), "odd": pa.array([[1, 2]], pa.list_(pa.int64())),
        "extra": pa.array([True]),
    }), folder / "b.parquet")
    schema, chunks = read_run(cfg_for(folder, tmp_path))
    assert schema is not None
    assert schema.field("n").type == pa.int64()
    assert schema.field("odd").type == pa.string()
    assert schema.field("extra").type == pa.bool_()
    assert schema.field("text").type == pa.string()
    for chunk in chunks:
        assert inputs(chunk).schema.equals(schema), chunk.schema
    table = pa.concat_tables(chunks)
    assert table.column("n").to_pylist() == [1, 2**40]
    assert table.column("odd").to_pylist() == ["7", "[1, 2]"]
    assert table.column("extra").to_pylist() == [None, True]


def test_mixed_jsonl_and_parquet_makes_every_column_string(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["p"], "n": [5], "d": [{"a": 1}]}), folder / "a.parquet")
    write_lines(folder / "b.jsonl", [json.dumps({"text": "j", "n": "five"})])
    schema, chunks = read_run(cfg_for(folder, tmp_path))
    assert schema is not None and all(f.type == pa.string() for f in schema)
    assert set(schema.names) == {"text", "n", "d"}
    table = pa.concat_tables(chunks)
    assert table.column("n").to_pylist() == ["5", "five"]
    assert table.column("d").to_pylist() == ['{"a": 1}', None]


def test_no_shards_no_schema(tmp_path: Path) -> None:
    assert passthrough_schema([], cfg_for(tmp_path / "in", tmp_path)) is None


# ---------------------------------------------------------------- 5. streamed row groups
def test_parquet_row_group_is_streamed_not_loaded_whole(tmp_path: Path) -> None:
    """One 40 MB row group, read 1,000 rows at a time: Arrow memory held while a chunk is
    in hand stays near one chunk, not the row group."""
    f = tmp_path / "in" / "big.parquet"
    f.parent.mkdir()
    n = 200_000
    texts = pa.array([os.urandom(100).hex() for _ in range(n)], pa.string())  # ~40 MB
    pq.write_table(pa.table({"text": texts}), f, row_group_size=n, compression="none")
    assert pq.ParquetFile(f).num_row_groups == 1
    cfg = cfg_for(f, tmp_path, read_chunk_rows=1000)
    base = pa.total_allocated_bytes()
    peak = 0
    rows = 0
    for chunk in read_shard(ShardInfo(str(f), "parquet", f.stat().st_size, str(f.stat().st_mtime)), cfg):
        peak = max(peak, pa.total_allocated_bytes() - base)
        if chunk.column(C.REASON)[0].as_py() == SHARD_END:
            assert chunk.column(C.SHARD_ROWS).to_pylist() == [n]  # the reader's count
            continue
        rows += chunk.num_rows
        assert chunk.num_rows <= 1000
    assert rows == n
    assert peak < 10_000_000, f"{peak / 1e6:.1f} MB held while streaming 1,000-row chunks"


def test_parquet_corrupt_row_group_names_file_and_group(tmp_path: Path) -> None:
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(100)]}), f, row_group_size=50, compression="none")
    meta = pq.ParquetFile(f).metadata
    offset = meta.row_group(1).column(0).data_page_offset
    raw = bytearray(f.read_bytes())
    raw[offset : offset + 40] = b"\xff" * 40  # trash the second group's page header
    f.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"row group 1 is unreadable") as info:
        list(read_shard(discover_shards(cfg_for(f, tmp_path))[0], cfg_for(f, tmp_path)))
    assert str(f) in str(info.value)


# ---------------------------------------------------------------- 8. version at listing
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_file_changed_since_listing_fails_the_shard(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    f = folder / f"a.{fmt}"
    _write(f, fmt, ["a", "b"])
    cfg = cfg_for(folder, tmp_path)
    shard = discover_shards(cfg)[0]
    _write(f, fmt, ["a", "b", "c"])
    os.utime(f, (shard_time(shard) + 5, shard_time(shard) + 5))
    with pytest.raises(InputError, match="changed since it was listed") as info:
        list(read_shard(shard, cfg))
    assert str(f) in str(info.value)


def test_file_changed_while_reading_yields_no_shard_count(tmp_path: Path) -> None:
    """A change during the read fails the shard before its last chunk (the one carrying the
    row count) is handed on, so no mix of versions can commit."""
    f = write_lines(tmp_path / "in" / "a.jsonl", [json.dumps({"text": f"t{i}"}) for i in range(6)])
    cfg = cfg_for(f, tmp_path, read_chunk_rows=2)
    shard = discover_shards(cfg)[0]
    seen: list[pa.Table] = []
    with pytest.raises(InputError, match="changed since it was listed"):
        for chunk in read_shard(shard, cfg):
            seen.append(chunk)
            if len(seen) == 1:
                with f.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"text": "late"}) + "\n")
                os.utime(f, (shard_time(shard) + 5, shard_time(shard) + 5))
    assert all(set(c.column(C.SHARD_ROWS).to_pylist()) == {-1} for c in seen)


def shard_time(shard: ShardInfo) -> float:
    return float(shard.version)


def _write(path: Path, fmt: str, texts: list[str]) -> None:
    if fmt == "jsonl":
        write_lines(path, [json.dumps({"text": t}) for t in texts])
    else:
        pq.write_table(pa.table({"text": texts}), path)


def test_key_unknown_to_the_plan_names_file_and_line(tmp_path: Path) -> None:
    """A key the plan did not see (the file changed since planning) fails the shard naming
    file and line, rather than dropping the value."""
    f = write_lines(tmp_path / "in" / "a.jsonl", [json.dumps({"text": "a"}), json.dumps({"text": "b", "new": 1})])
    plan = pa.schema([pa.field("text", pa.string())])
    with pytest.raises(InputError, match="column 'new' is not among the input columns") as info:
        list(read_shard(ShardInfo(str(f), "jsonl", 0, ""), cfg_for(f, tmp_path), plan))
    assert f"{f}:2:" in str(info.value)


def test_drifting_jsonl_written_by_the_committer_reads_as_one_table(tmp_path: Path) -> None:
    """Without an engine: read chunks through the real writer (the stages' columns filled
    in), then `pq.read_table(OUTPUT)` reads every file under one schema, every value kept."""
    from enrich.commit import OutputCommitter
    from enrich.write import Lineage
    from tests.commit_fixtures import deliver
    from tests.helpers import ADDRESS_FIELDS, stage_columns

    folder = tmp_path / "in"
    lines = [
        "garbage",
        json.dumps({"text": "a", "order_id": "A1"}),
        json.dumps({"text": "b", "zip": 310000}),
        json.dumps({"text": "c", "zip": "31000X", "note": "gift"}),
        json.dumps({"text": "d"}),
        json.dumps({"text": "e", "zip": {"plus4": 1}}),
    ]
    write_lines(folder / "a.jsonl", lines)
    cfg = cfg_for(folder, tmp_path, read_chunk_rows=2, row_group_rows=2)
    shards = discover_shards(cfg)
    schema = passthrough_schema(shards, cfg)
    committer = OutputCommitter(cfg, Lineage("m", None, None, "address", "2", "fp"), list(ADDRESS_FIELDS))
    committer.plan(shards)
    for n, chunk in enumerate(read_shard(shards[0], cfg, schema)):
        indexes = chunk.column(C.ROW_INDEX).to_pylist()
        rejected = [r is not None for r in chunk.column(C.REASON).to_pylist()]
        for name, values in stage_columns(indexes, rejected).items():
            chunk = chunk.append_column(name, values)
        deliver(committer, chunk, f"w{n}")  # the write stage's files, then the driver's commit
    committer.finish()
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 5
    rows = {r["enrich_row_index"]: r for r in table.to_pylist()}
    assert rows[1]["order_id"] == "A1" and rows[2]["zip"] == "310000"
    assert rows[3]["zip"] == "31000X" and rows[3]["note"] == "gift"
    assert rows[4]["zip"] is None and rows[5]["zip"] == '{"plus4": 1}'
