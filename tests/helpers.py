"""Shared checks for end-to-end tests: read an output prefix back and check its promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, PyFileSystem

from enrich import columns as C

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples" / "addresses"
ADDRESS_FIELDS = ["province", "city", "district", "specific_location", "name", "phone"]


def stage_columns(indexes: list[int], rejected: list[bool]) -> dict[str, pa.Array]:
    """What the generate and validate stages add to a read chunk, with fixed values: the
    working columns, then the address fields (null on a rejected row)."""
    n = len(indexes)
    cols: dict[str, pa.Array] = {
        C.PROMPT_TOKEN_IDS: pa.array([[1, 2]] * n, pa.list_(pa.int32())),
        C.PROMPT_TOKENS: pa.array([2] * n, pa.int32()),
        C.RAW_OUTPUT: pa.array([f"raw{i}" for i in indexes], pa.string()),
        C.FINISH_REASON: pa.array(["stop"] * n, pa.string()),
        C.OUTPUT_TOKENS: pa.array([10] * n, pa.int32()),
        C.ATTEMPTS: pa.array([1] * n, pa.int32()),
    }
    for name in ADDRESS_FIELDS:
        cols[name] = pa.array([None if bad else f"{name}{i}" for i, bad in zip(indexes, rejected)], pa.string())
    return cols


def read_output(fs: Any, root: str) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
    """(enriched rows, rejects, summary) of an output prefix, via its manifests' file lists."""
    afs = PyFileSystem(FSSpecHandler(fs))
    summary = json.loads(fs.cat_file(f"{root}/_summary.json"))
    ok_parts, bad_parts = [], []
    for path in sorted(fs.glob(f"{root}/_manifests/*.json")):
        manifest = json.loads(fs.cat_file(path))
        ok_parts += [pq.read_table(f"{root}/{f}", filesystem=afs) for f in manifest["files"]]
        bad_parts += [pq.read_table(f"{root}/{f}", filesystem=afs) for f in manifest["reject_files"]]
    ok = pa.concat_tables(ok_parts, promote_options="permissive") if ok_parts else pa.table({})
    # A run with no rejected row writes no rejects file (the writer skips empty tables).
    bad = pa.concat_tables(bad_parts) if bad_parts else C.REJECTS_SCHEMA.empty_table()
    return ok, bad, summary


def check_every_row_once(ok: pa.Table, bad: pa.Table, summary: dict[str, Any], rows_in: int) -> None:
    """The job's central promise: each input row is in exactly one of the two tables."""
    assert summary["invariant_ok"] is True
    assert summary["rows_in"] == summary["rows_ok"] + summary["rows_rejected"] == rows_in
    assert ok.num_rows == summary["rows_ok"] and bad.num_rows == summary["rows_rejected"]
    assert len(row_keys(ok, bad)) == len(set(row_keys(ok, bad))) == rows_in


def row_keys(ok: pa.Table, bad: pa.Table) -> list[tuple[str, int]]:
    """(source file, row index) of every output row, enriched and rejected."""
    keys = []
    if ok.num_rows:  # a run with no valid row writes no enriched file
        keys += list(zip(ok.column("enrich_source_file").to_pylist(), ok.column("enrich_row_index").to_pylist()))
    keys += list(zip(bad.column("source_file").to_pylist(), bad.column("row_index").to_pylist()))
    return keys


def check_enriched_schema(ok: pa.Table, input_columns: list[str], fingerprint: str) -> None:
    names = ok.column_names
    for col in input_columns + ADDRESS_FIELDS + C.LINEAGE_SCHEMA.names:
        assert col in names, f"missing column {col}"
    assert not [n for n in names if n.startswith("_enrich_")]
    for field in ADDRESS_FIELDS:
        assert ok.schema.field(field).type == pa.string()
    assert set(ok.column("enrich_task").to_pylist()) == {"address"}
    assert set(ok.column("enrich_fingerprint").to_pylist()) == {fingerprint}
    assert all(p for p in ok.column("province").to_pylist())


def check_rejects_schema(bad: pa.Table) -> None:
    assert bad.schema.equals(C.REJECTS_SCHEMA), bad.schema


_PLACES = [
    ("浙江省", "杭州市", "西湖区", "文三路"),
    ("广东省", "深圳市", "南山区", "科技南路"),
    ("天津市", "天津市", "河西区", "珠江道"),
    ("四川省", "成都市", "武侯区", "人民南路"),
    ("湖北省", "武汉市", "洪山区", "珞喻路"),
]
_NAMES = ["张伟", "李娜", "王芳", "刘洋", "陈静", "慕容修远"]


def synthetic_addresses(n: int, seed: int = 0) -> list[str]:
    """Shipping-address strings in a few real-world layouts (deterministic)."""
    out = []
    for i in range(seed, seed + n):
        prov, city, dist, road = _PLACES[i % len(_PLACES)]
        name, phone = _NAMES[i % len(_NAMES)], f"139{i:08d}"
        place = f"{'' if prov == city else prov}{city}{dist}{road}{i % 97 + 1}号"
        layouts = [
            f"{place} , 接收人{name} , MOBILE：{phone}",
            f"电话：{phone}:{place}:收件者：{name}",
            f"收货人: {name} 手机 {phone} 地址 {place}",
        ]
        out.append(layouts[i % len(layouts)])
    return out
