"""Unit tests for enrich.read: shard discovery and streaming JSONL/Parquet shards as chunks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.read import SHARD_END, InputError, ShardInfo, discover_shards, read_shard


def make_cfg(input_path: Path | str, tmp_path: Path, **extra: Any) -> JobConfig:
    """A JobConfig reading `input_path` and writing to a folder outside it."""
    return JobConfig.model_validate(
        {"input": str(input_path), "output": str(tmp_path / "out"), "model": "unused", **extra}
    )


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON document per line (any JSON value, not only objects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def shard_of(path: Path, fmt: str) -> ShardInfo:
    """A ShardInfo for a local file, as discover_shards would build it."""
    return ShardInfo(str(path), fmt, os.path.getsize(path), str(os.stat(path).st_mtime))


def read_all(path: Path, fmt: str, cfg: JobConfig) -> list[pa.Table]:
    """Every data chunk read_shard yields for `path`; checks the end-of-shard marker that
    follows them (one row, reason SHARD_END, SHARD_ROWS = the shard's row count)."""
    *chunks, end = list(read_shard(shard_of(path, fmt), cfg))
    assert end.num_rows == 1 and end.column(C.REASON).to_pylist() == [SHARD_END]
    assert end.column(C.SHARD_ROWS).to_pylist() == [sum(c.num_rows for c in chunks)]
    assert end.column(C.ROW_INDEX).to_pylist() == [-1]
    return chunks


def concat(chunks: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(chunks, promote_options="permissive")


# ---------------------------------------------------------------- discover_shards
def test_discover_single_file(tmp_path: Path) -> None:
    """A file path yields exactly that file, with its size and a version."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "x"}])
    shards = discover_shards(make_cfg(f, tmp_path))
    assert [(s.url, s.format, s.size) for s in shards] == [(str(f), "jsonl", f.stat().st_size)]
    assert shards[0].version != ""
    assert len(shards[0].shard_id) == 16


def test_discover_folder_skips_hidden_and_unknown(tmp_path: Path) -> None:
    """A folder is searched recursively; `_`/`.` names (files or folders) and unknown extensions are skipped."""
    folder = tmp_path / "in"
    write_jsonl(folder / "b.jsonl", [{"text": "x"}])
    write_jsonl(folder / "sub" / "c.ndjson", [{"text": "x"}])
    pq.write_table(pa.table({"text": ["x"]}), _mkparent(folder / "a.parquet"))
    write_jsonl(folder / "_SUCCESS.jsonl", [{"text": "x"}])
    write_jsonl(folder / ".hidden.jsonl", [{"text": "x"}])
    write_jsonl(folder / "_staging" / "d.jsonl", [{"text": "x"}])
    write_jsonl(folder / ".git" / "e.jsonl", [{"text": "x"}])
    (folder / "README.md").write_text("hello", encoding="utf-8")
    (folder / "data.csv").write_text("text\nx\n", encoding="utf-8")

    shards = discover_shards(make_cfg(folder, tmp_path))
    assert [(s.url, s.format) for s in shards] == [
        (str(folder / "a.parquet"), "parquet"),
        (str(folder / "b.jsonl"), "jsonl"),
        (str(folder / "sub" / "c.ndjson"), "jsonl"),
    ]


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_discover_glob(tmp_path: Path) -> None:
    """A glob yields the matching files only, sorted."""
    folder = tmp_path / "in"
    for name in ("b.jsonl", "a.jsonl"):
        write_jsonl(folder / name, [{"text": "x"}])
    pq.write_table(pa.table({"text": ["x"]}), folder / "c.parquet")
    shards = discover_shards(make_cfg(folder / "*.jsonl", tmp_path))
    assert [s.url for s in shards] == [str(folder / "a.jsonl"), str(folder / "b.jsonl")]
    assert {s.format for s in shards} == {"jsonl"}


def test_discover_missing_path_names_it(tmp_path: Path) -> None:
    """A path that does not exist raises InputError naming it."""
    missing = tmp_path / "nope" / "data.jsonl"
    with pytest.raises(InputError, match="no such file or folder") as info:
        discover_shards(make_cfg(missing, tmp_path))
    assert str(missing) in str(info.value)


def test_discover_empty_folder_raises(tmp_path: Path) -> None:
    """A folder without any shard raises InputError rather than running on nothing."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="no Parquet or JSONL shards"):
        discover_shards(make_cfg(folder, tmp_path))


def test_discover_explicit_unknown_extension(tmp_path: Path) -> None:
    """An explicitly named file with an unknown extension raises (asks for --format)..."""
    f = tmp_path / "in" / "data.txt"
    f.parent.mkdir()
    f.write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="unknown extension") as info:
        discover_shards(make_cfg(f, tmp_path))
    assert str(f) in str(info.value)
    assert "--format" in str(info.value)


def test_discover_explicit_format_overrides_extension(tmp_path: Path) -> None:
    """...and is accepted when --format names the format."""
    f = tmp_path / "in" / "data.txt"
    f.parent.mkdir()
    f.write_text('{"text": "x"}\n', encoding="utf-8")
    shards = discover_shards(make_cfg(f, tmp_path, format="jsonl"))
    assert [(s.url, s.format) for s in shards] == [(str(f), "jsonl")]


# ---------------------------------------------------------------- JSONL
def test_jsonl_chunking_lineage_and_shard_rows(tmp_path: Path) -> None:
    """Chunks of read_chunk_rows; lineage per row; the row count on the end marker only."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": f"t{i}", "n": i} for i in range(7)])
    cfg = make_cfg(f, tmp_path, read_chunk_rows=3)
    shard = shard_of(f, "jsonl")
    chunks = read_all(f, "jsonl", cfg)

    assert [c.num_rows for c in chunks] == [3, 3, 1]
    assert [c.column(C.SHARD_ROWS).to_pylist() for c in chunks] == [[-1] * 3, [-1] * 3, [-1]]
    table = concat(chunks)
    assert table.column(C.ROW_INDEX).to_pylist() == list(range(7))
    assert table.column(C.ROW_ID).to_pylist() == [f"{shard.shard_id}-{i}" for i in range(7)]
    assert set(table.column(C.SOURCE_FILE).to_pylist()) == {str(f)}
    assert table.column(C.TEXT).to_pylist() == [f"t{i}" for i in range(7)]
    assert table.column(C.REASON).to_pylist() == [None] * 7
    assert table.column(C.MESSAGE).to_pylist() == [None] * 7
    # Input columns travel unchanged next to the working columns.
    assert table.column("n").to_pylist() == list(range(7))
    assert table.column("text").to_pylist() == [f"t{i}" for i in range(7)]
    assert table.schema.field(C.ROW_INDEX).type == pa.int64()
    assert table.schema.field(C.SHARD_ROWS).type == pa.int64()


def test_jsonl_exact_multiple_of_chunk_rows(tmp_path: Path) -> None:
    """When rows divide evenly into chunks, the marker after them carries the count."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": f"t{i}"} for i in range(4)])
    chunks = read_all(f, "jsonl", make_cfg(f, tmp_path, read_chunk_rows=2))
    assert [c.column(C.SHARD_ROWS).to_pylist() for c in chunks] == [[-1, -1], [-1, -1]]


def test_jsonl_single_chunk_carries_count(tmp_path: Path) -> None:
    """A shard that fits in one chunk: one chunk, then the marker with its count (read_all)."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "a"}, {"text": "b"}])
    chunks = read_all(f, "jsonl", make_cfg(f, tmp_path))
    assert len(chunks) == 1
    assert chunks[0].column(C.SHARD_ROWS).to_pylist() == [-1, -1]


def test_jsonl_empty_file_yields_nothing(tmp_path: Path) -> None:
    """An empty (or blank-only) shard has no data chunks, only the marker announcing 0 rows."""
    f = tmp_path / "in" / "a.jsonl"
    f.parent.mkdir()
    f.write_text("\n  \n", encoding="utf-8")
    assert read_all(f, "jsonl", make_cfg(f, tmp_path)) == []


def test_jsonl_blank_lines_skipped(tmp_path: Path) -> None:
    """Blank lines are not rows and do not consume row indexes; line numbers still count them."""
    f = tmp_path / "in" / "a.jsonl"
    f.parent.mkdir()
    f.write_text('{"text": "a"}\n\n   \n{"text": "b"}\r\n\n{"text": 1}\n', encoding="utf-8")
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    assert table.num_rows == 3
    assert table.column(C.ROW_INDEX).to_pylist() == [0, 1, 2]
    assert table.column(C.TEXT).to_pylist()[:2] == ["a", "b"]
    assert table.column(C.SHARD_ROWS).to_pylist() == [-1, -1, -1]
    # The third row is on physical line 6.
    assert table.column(C.MESSAGE).to_pylist()[2].startswith(f"{f}:6:")


def test_jsonl_bad_json_line(tmp_path: Path) -> None:
    """An unparseable line is a bad_input row with path:LINE:COL and its raw text; others are fine."""
    f = tmp_path / "in" / "a.jsonl"
    f.parent.mkdir()
    f.write_text('{"text": "a", "id": "A"}\n{"text": "b" "id": "B"}\n{"text": "c", "id": "C"}\n', encoding="utf-8")
    cfg = make_cfg(f, tmp_path, id_column="id")
    table = concat(read_all(f, "jsonl", cfg))
    sid = shard_of(f, "jsonl").shard_id

    assert table.num_rows == 3
    assert table.column(C.REASON).to_pylist() == [None, "bad_input", None]
    # The missing comma is before the '"id"' at column 14 of line 2.
    assert table.column(C.MESSAGE).to_pylist()[1] == (
        f"{f}:2:14: invalid JSON: Expecting ',' delimiter"
    )
    assert table.column(C.TEXT).to_pylist() == ["a", '{"text": "b" "id": "B"}', "c"]
    # No id could be read from the bad line: it gets the derived one.
    assert table.column(C.ROW_ID).to_pylist() == ["A", f"{sid}-1", "C"]
    # Its input columns are null, not invented.
    assert table.column("text").to_pylist() == ["a", None, "c"]
    assert table.column(C.SHARD_ROWS).to_pylist() == [-1, -1, -1]


def test_jsonl_truncated_line_column(tmp_path: Path) -> None:
    """A line cut off mid-object reports the column where it ends, not column 1."""
    f = tmp_path / "in" / "a.jsonl"
    f.parent.mkdir()
    f.write_text('{"text": "a"}\n{"text": "b", \n', encoding="utf-8")
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    message = table.column(C.MESSAGE).to_pylist()[1]
    assert message.startswith(f"{f}:2:15: invalid JSON"), message


def test_jsonl_all_lines_bad(tmp_path: Path) -> None:
    """A chunk of only unparseable lines still yields rows (working columns only)."""
    f = tmp_path / "in" / "a.jsonl"
    f.parent.mkdir()
    f.write_text("nope\n[1, 2]\n", encoding="utf-8")
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    assert table.num_rows == 2
    assert table.column(C.REASON).to_pylist() == ["bad_input", "bad_input"]
    assert not [n for n in table.column_names if not n.startswith("_enrich_")]
    assert table.column(C.SHARD_ROWS).to_pylist() == [-1, -1]


def test_jsonl_invalid_utf8(tmp_path: Path) -> None:
    """Invalid UTF-8 is a bad_input row naming the line and the 1-based byte column."""
    f = tmp_path / "in" / "a.jsonl"
    f.parent.mkdir()
    # b'{"text": "' is 10 bytes: the bad byte is byte 11 of line 2.
    f.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    assert table.column(C.REASON).to_pylist() == [None, "bad_input"]
    message = table.column(C.MESSAGE).to_pylist()[1]
    assert message.startswith(f"{f}:2:11: invalid UTF-8")
    # The text is kept (with replacement characters) so the reject shows what was there.
    assert table.column(C.TEXT).to_pylist()[1] == '{"text": "\ufffd\ufffd"}'


def test_jsonl_array_line(tmp_path: Path) -> None:
    """A JSON value that is not an object is a bad_input row saying what it got."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "a"}, ["text", "b"], "just a string"])
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    assert table.column(C.REASON).to_pylist() == [None, "bad_input", "bad_input"]
    messages = table.column(C.MESSAGE).to_pylist()
    assert messages[1] == f"{f}:2: expected a JSON object, got list"
    assert messages[2] == f"{f}:3: expected a JSON object, got str"


@pytest.mark.parametrize(
    ("value", "kind", "as_text"),
    [(12345, "int", "12345"), ({"a": 1}, "dict", '{"a": 1}'), (["x"], "list", '["x"]'), (True, "bool", "true")],
)
def test_jsonl_non_string_text(tmp_path: Path, value: Any, kind: str, as_text: str) -> None:
    """A non-string text is bad_input naming the column and the type; the row keeps its id."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "A0", "body": "ok"}, {"id": "A1", "body": value}])
    cfg = make_cfg(f, tmp_path, text_column="body", id_column="id")
    table = concat(read_all(f, "jsonl", cfg))
    assert table.column(C.REASON).to_pylist() == [None, "bad_input"]
    assert table.column(C.MESSAGE).to_pylist()[1] == f"{f}:2: column 'body' is {kind}, expected string"
    assert table.column(C.TEXT).to_pylist() == ["ok", as_text]
    assert table.column(C.ROW_ID).to_pylist() == ["A0", "A1"]


def test_jsonl_null_or_missing_text_is_not_bad_input(tmp_path: Path) -> None:
    """A null or missing text is left for prepare (empty_text), not flagged here."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": None}, {"other": 1}])
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    assert table.column(C.REASON).to_pylist() == [None, None]
    assert table.column(C.TEXT).to_pylist() == [None, None]


def test_jsonl_id_column(tmp_path: Path) -> None:
    """The id column is used (as a string) when present; a row without it gets the derived id."""
    rows = [{"oid": "A", "text": "a"}, {"oid": 7, "text": "b"}, {"text": "c"}, {"oid": None, "text": "d"}]
    f = write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    cfg = make_cfg(f, tmp_path, id_column="oid", read_chunk_rows=2)
    sid = shard_of(f, "jsonl").shard_id
    table = concat(read_all(f, "jsonl", cfg))
    assert table.column(C.ROW_ID).to_pylist() == ["A", "7", f"{sid}-2", f"{sid}-3"]


def test_jsonl_derived_ids_without_id_column(tmp_path: Path) -> None:
    """Without --id-column every id is '<shard_id>-<row index>', continuing across chunks."""
    f = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"X{i}", "text": "t"} for i in range(5)])
    sid = shard_of(f, "jsonl").shard_id
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path, read_chunk_rows=2)))
    assert table.column(C.ROW_ID).to_pylist() == [f"{sid}-{i}" for i in range(5)]


def test_jsonl_mixed_types_keep_every_row(tmp_path: Path) -> None:
    """Mixed types in a non-text column across rows of one chunk: no row or value is lost."""
    rows = [
        {"id": "A0", "text": "a", "zip": 310000},
        {"id": "A1", "text": "b", "zip": "31000X"},
        {"id": "A2", "text": "c", "zip": None},
        {"id": "A3", "text": "d"},
    ]
    f = write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path, id_column="id")))
    assert table.num_rows == 4
    assert table.column(C.ROW_INDEX).to_pylist() == [0, 1, 2, 3]
    assert table.column(C.ROW_ID).to_pylist() == ["A0", "A1", "A2", "A3"]
    assert table.column(C.TEXT).to_pylist() == ["a", "b", "c", "d"]
    assert table.column(C.REASON).to_pylist() == [None] * 4
    zips = table.column("zip").to_pylist()
    assert zips[0] in (310000, "310000") and zips[1] in ("31000X", '"31000X"')
    assert zips[3] is None


def test_jsonl_mixed_types_leave_other_columns_unchanged(tmp_path: Path) -> None:
    """Only the mixed column should change representation; string columns keep their values."""
    rows = [{"id": "A0", "text": "a", "zip": 310000}, {"id": "A1", "text": "b", "zip": "31000X"}]
    f = write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    table = concat(read_all(f, "jsonl", make_cfg(f, tmp_path)))
    assert table.column("text").to_pylist() == ["a", "b"]
    assert table.column("id").to_pylist() == ["A0", "A1"]


def test_jsonl_type_drift_between_chunks(tmp_path: Path) -> None:
    """A column whose type differs between chunks keeps all rows (the chunks differ in schema)."""
    rows = [{"text": "a", "zip": 1}, {"text": "b", "zip": 2}, {"text": "c", "zip": "x"}]
    f = write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    chunks = read_all(f, "jsonl", make_cfg(f, tmp_path, read_chunk_rows=2))
    assert [c.num_rows for c in chunks] == [2, 1]
    assert chunks[0].column("zip").to_pylist() == [1, 2]
    assert chunks[1].column("zip").to_pylist() == ["x"]


# ---------------------------------------------------------------- Parquet
def test_parquet_missing_text_column(tmp_path: Path) -> None:
    """A Parquet shard without the text column raises InputError naming the file and column."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), f)
    with pytest.raises(InputError) as info:
        read_all(f, "parquet", make_cfg(f, tmp_path))
    message = str(info.value)
    assert str(f) in message and "'text'" in message and "body" in message


def test_parquet_wrong_text_type(tmp_path: Path) -> None:
    """An int text column raises InputError naming the file, column and type."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"text": [1, 2]}), f)
    with pytest.raises(InputError, match="expected string") as info:
        read_all(f, "parquet", make_cfg(f, tmp_path))
    assert str(f) in str(info.value) and "int64" in str(info.value)


def test_parquet_missing_id_column(tmp_path: Path) -> None:
    """A named id column absent from the file raises InputError."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"text": ["x"]}), f)
    with pytest.raises(InputError, match="no id column 'oid'"):
        read_all(f, "parquet", make_cfg(f, tmp_path, id_column="oid"))


def test_parquet_corrupt_file(tmp_path: Path) -> None:
    """Random bytes named .parquet raise InputError naming the file."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    f.write_bytes(os.urandom(4096))
    with pytest.raises(InputError, match="not a readable Parquet file") as info:
        read_all(f, "parquet", make_cfg(f, tmp_path))
    assert str(f) in str(info.value)


def test_parquet_several_row_groups(tmp_path: Path) -> None:
    """Every row group is read, chunked by read_chunk_rows, with contiguous row indexes."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    n = 10
    source = pa.table({"oid": [f"P{i}" for i in range(n)], "text": [f"t{i}" for i in range(n)], "k": list(range(n))})
    pq.write_table(source, f, row_group_size=4)
    assert pq.ParquetFile(f).num_row_groups == 3

    cfg = make_cfg(f, tmp_path, read_chunk_rows=3, id_column="oid")
    chunks = read_all(f, "parquet", cfg)
    assert [c.num_rows for c in chunks] == [3, 1, 3, 1, 2]
    assert all(set(c.column(C.SHARD_ROWS).to_pylist()) == {-1} for c in chunks)  # n: on the marker
    table = concat(chunks)
    assert table.column(C.ROW_INDEX).to_pylist() == list(range(n))
    assert table.column("k").to_pylist() == list(range(n))
    assert table.column(C.ROW_ID).to_pylist() == [f"P{i}" for i in range(n)]
    assert table.column(C.TEXT).to_pylist() == [f"t{i}" for i in range(n)]
    assert table.column(C.REASON).null_count == n
    assert table.schema.field(C.REASON).type == pa.string()


def test_parquet_large_string_and_null_text(tmp_path: Path) -> None:
    """large_string text is accepted (as string); null text stays null for prepare to reject."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"text": pa.array(["a", None], pa.large_string())}), f)
    table = concat(read_all(f, "parquet", make_cfg(f, tmp_path)))
    assert table.column(C.TEXT).type == pa.string()
    assert table.column(C.TEXT).to_pylist() == ["a", None]
    assert table.column(C.REASON).to_pylist() == [None, None]


def test_parquet_short_read_fails_against_the_footer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shard's count must come from what was decoded AND agree with the footer: a decoder
    that silently loses a batch (simulated) fails the shard instead of certifying a short one."""
    f = tmp_path / "in" / "a.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(10)]}), f, row_group_size=4)
    real = pq.ParquetFile.iter_batches

    def lossy(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        batches = list(real(self, *args, **kwargs))
        return iter(batches[:-1] if kwargs.get("row_groups") == [1] else batches)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lossy)
    with pytest.raises(InputError, match="decoded 6 rows but its footer declares 10") as info:
        read_all(f, "parquet", make_cfg(f, tmp_path, read_chunk_rows=4))
    assert str(f) in str(info.value)
