"""Unit tests for enrich.commit.OutputCommitter, driven with synthetic finished batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.commit import OutputCommitter, OutputExistsError
from enrich.config import JobConfig
from enrich.read import ShardInfo
from enrich.write import Lineage
from tests.helpers import ADDRESS_FIELDS, stage_columns

LINEAGE = Lineage("unused", None, None, "address", "1", "fp-one")


def make_cfg(tmp_path: Path, out: str = "out", **extra: Any) -> JobConfig:
    return JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(tmp_path / out), "model": "unused", **extra}
    )


def make_shard(tmp_path: Path, name: str, version: str = "v1") -> ShardInfo:
    """A shard URL under the input folder (no file needed to commit it)."""
    return ShardInfo(str(tmp_path / "in" / name), "jsonl", 1000, version)


def committer(tmp_path: Path, lineage: Lineage = LINEAGE, **extra: Any) -> OutputCommitter:
    return OutputCommitter(make_cfg(tmp_path, **extra), lineage, list(ADDRESS_FIELDS))


def finished(
    shard: ShardInfo,
    indexes: list[int],
    total: int,
    rejects: dict[int, str] | None = None,
    zips: list[Any] | None = None,
) -> pa.Table:
    """Rows as validate_batch outputs them: input + working + the six address columns.

    `total` is stamped in SHARD_ROWS when the batch holds the shard's last row (as the reader
    does for its last chunk); `rejects` maps row index -> reason.
    """
    rejects = rejects or {}
    n = len(indexes)
    bad = [i in rejects for i in indexes]
    last = total if total - 1 in indexes else -1
    cols: dict[str, pa.Array] = {
        "order_id": pa.array([f"{shard.url[-7:]}#{i}" for i in indexes], pa.string()),
        "text": pa.array([f"地址{i}" for i in indexes], pa.string()),
    }
    if zips is not None:
        cols["zip"] = pa.array(zips)
    cols |= {
        C.ROW_ID: pa.array([f"{shard.shard_id}-{i}" for i in indexes], pa.string()),
        C.SOURCE_FILE: pa.array([shard.url] * n, pa.string()),
        C.ROW_INDEX: pa.array(indexes, pa.int64()),
        C.SHARD_ROWS: pa.array([last] * n, pa.int64()),
        C.TEXT: pa.array([f"地址{i}" for i in indexes], pa.string()),
        C.REASON: pa.array([rejects.get(i) for i in indexes], pa.string()),
        C.MESSAGE: pa.array([f"why {i}" if b else None for i, b in zip(indexes, bad)], pa.string()),
    }
    return pa.table(cols | stage_columns(indexes, bad))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def manifest(root: Path, shard: ShardInfo) -> dict[str, Any]:
    return json.loads((root / "_manifests" / f"{shard.shard_id}.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- layout
def test_commit_layout_manifests_and_schemas(tmp_path: Path) -> None:
    """Two shards: enriched, rejects and manifest files at their documented names and schemas."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    assert oc.plan([a, b]) == [a, b]
    oc.add(finished(a, [0, 1, 2, 3, 4], 5, rejects={1: "invalid_json", 3: "domain_check"}))
    oc.add(finished(b, [0, 1, 2], 3))
    oc.finish()
    out = tmp_path / "out"
    sa, sb = a.shard_id, b.shard_id

    assert files_under(out) == sorted(
        [
            f"part-{sa}-0.parquet", f"part-{sb}-0.parquet",
            f"_rejects/part-{sa}-0.parquet", f"_rejects/part-{sb}-0.parquet",
            f"_manifests/{sa}.json", f"_manifests/{sb}.json",
        ]
    )
    ma = manifest(out, a)
    assert ma == {
        "shard_id": sa, "source": a.url, "size": 1000, "version": "v1", "fingerprint": "fp-one",
        "rows_in": 5, "rows_ok": 3, "rows_rejected": 2,
        "rejects_by_reason": {"domain_check": 1, "invalid_json": 1}, "output_tokens": 50,
        "files": [f"part-{sa}-0.parquet"], "reject_files": [f"_rejects/part-{sa}-0.parquet"],
    }
    mb = manifest(out, b)
    assert (mb["rows_in"], mb["rows_ok"], mb["rows_rejected"], mb["rejects_by_reason"]) == (3, 3, 0, {})
    assert [m.shard_id for m in oc.committed] == [sa, sb]

    ok = pq.read_table(out / f"part-{sa}-0.parquet")
    assert ok.column_names == ["order_id", "text", *ADDRESS_FIELDS, *C.LINEAGE_SCHEMA.names]
    assert ok.schema.field("enrich_row_index").type == pa.int64()
    assert ok.column("enrich_row_index").to_pylist() == [0, 2, 4]
    assert ok.column("province").to_pylist() == ["province0", "province2", "province4"]
    assert ok.column("enrich_source_file").to_pylist() == [a.url] * 3
    assert ok.column("enrich_row_id").to_pylist() == [f"{sa}-{i}" for i in (0, 2, 4)]
    assert set(ok.column("enrich_fingerprint").to_pylist()) == {"fp-one"}
    assert set(ok.column("enrich_task").to_pylist()) == {"address"}
    assert set(ok.column("enrich_task_version").to_pylist()) == {"1"}
    assert ok.column("enrich_model_revision").to_pylist() == [None] * 3

    bad = pq.read_table(out / "_rejects" / f"part-{sa}-0.parquet")
    assert bad.schema.equals(C.REJECTS_SCHEMA)
    assert bad.column("row_index").to_pylist() == [1, 3]
    assert bad.column("reason").to_pylist() == ["invalid_json", "domain_check"]
    assert bad.column("message").to_pylist() == ["why 1", "why 3"]
    assert bad.column("raw_output").to_pylist() == ["raw1", "raw3"]
    assert bad.column("input_text").to_pylist() == ["地址1", "地址3"]
    assert bad.column("attempts").to_pylist() == [1, 1]
    assert json.loads(bad.column("input_json")[0].as_py())["text"] == "地址1"

    empty = pq.read_table(out / "_rejects" / f"part-{sb}-0.parquet")
    assert empty.num_rows == 0 and empty.schema.equals(C.REJECTS_SCHEMA)


def test_reject_input_json_holds_only_input_columns(tmp_path: Path) -> None:
    """input_json is the input row (so rejects can be fed back), not the task's null outputs."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    oc.add(finished(a, [0, 1], 2, rejects={1: "invalid_json"}))
    oc.finish()
    bad = pq.read_table(tmp_path / "out" / "_rejects" / f"part-{a.shard_id}-0.parquet")
    assert json.loads(bad.column("input_json")[0].as_py()) == {"order_id": f"{a.url[-7:]}#1", "text": "地址1"}


def test_all_rows_rejected_shard(tmp_path: Path) -> None:
    """A shard whose rows are all rejected has an empty enriched file (with the schema), a
    manifest and its rejects."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    oc.add(finished(a, [0, 1], 2, rejects={0: "bad_input", 1: "bad_input"}))
    oc.finish()
    m = manifest(tmp_path / "out", a)
    assert (m["rows_ok"], m["rows_rejected"], m["files"]) == (0, 2, [f"part-{a.shard_id}-0.parquet"])
    empty = pq.read_table(tmp_path / "out" / m["files"][0])
    assert empty.num_rows == 0 and "province" in empty.column_names and "enrich_fingerprint" in empty.column_names
    assert pq.read_table(tmp_path / "out" / m["reject_files"][0]).num_rows == 2


def test_empty_shard_commits_at_finish(tmp_path: Path) -> None:
    """A shard that produced no rows (no last chunk) commits at finish with zero counts."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    oc.finish()
    m = manifest(tmp_path / "out", a)
    assert (m["rows_in"], m["rows_ok"], m["rows_rejected"]) == (0, 0, 0)
    assert m["files"] == [] and m["reject_files"] == [f"_rejects/part-{a.shard_id}-0.parquet"]
    assert pq.read_table(tmp_path / "out" / m["reject_files"][0]).schema.equals(C.REJECTS_SCHEMA)


# ---------------------------------------------------------------- when a shard commits
def test_shard_commits_when_complete_before_finish(tmp_path: Path) -> None:
    """Rows arrive out of order; the shard commits once its count is known and reached."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, b])
    manifests = tmp_path / "out" / "_manifests"

    oc.add(finished(a, [3, 4], 5))  # the last chunk first: count known, rows missing
    assert not (manifests / f"{a.shard_id}.json").exists()
    assert a.shard_id in oc.open
    # One batch mixing both shards; completes a but not b.
    both = pa.concat_tables([finished(a, [0, 1, 2], 5), finished(b, [0], 3)])
    oc.add(both)
    assert (manifests / f"{a.shard_id}.json").exists()
    assert a.shard_id not in oc.open and b.shard_id in oc.open
    assert [m.shard_id for m in oc.committed] == [a.shard_id]
    assert not (tmp_path / "out" / "_staging" / a.shard_id).exists()
    assert (tmp_path / "out" / f"part-{a.shard_id}-0.parquet").exists()
    assert not (manifests / f"{b.shard_id}.json").exists()

    oc.add(finished(b, [1, 2], 3))
    assert (manifests / f"{b.shard_id}.json").exists()
    assert oc.open == {}
    ok = pq.read_table(tmp_path / "out" / f"part-{a.shard_id}-0.parquet")
    assert sorted(ok.column("enrich_row_index").to_pylist()) == [0, 1, 2, 3, 4]


def test_no_commit_without_last_chunk(tmp_path: Path) -> None:
    """Without the count from the last chunk a shard waits for finish, even with many rows."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    oc.add(finished(a, [0, 1, 2], 99))
    assert oc.committed == [] and a.shard_id in oc.open
    oc.finish()
    assert manifest(tmp_path / "out", a)["rows_in"] == 3


def test_row_arriving_twice_is_written_once(tmp_path: Path) -> None:
    """A batch re-run after an engine died repeats rows: the sink keeps the first copy."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, b])
    oc.add(finished(a, [0, 1, 2], -1))
    oc.add(finished(a, [2, 3, 4], 5))  # row 2 again, then the last chunk
    assert manifest(tmp_path / "out", a)["rows_in"] == 5
    assert manifest(tmp_path / "out", a)["rows_ok"] + manifest(tmp_path / "out", a)["rows_rejected"] == 5
    oc.add(finished(b, [0, 1, 1, 2], 3))  # a repeat inside one batch
    assert manifest(tmp_path / "out", b)["rows_in"] == 3
    assert oc.duplicates_dropped == 2


def test_missing_rows_fail_the_commit(tmp_path: Path) -> None:
    """A shard whose announced count is not reached by the end of the stream does not commit."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    oc.add(finished(a, [0, 4], 5))
    with pytest.raises(RuntimeError, match="read 5 rows but wrote 2 ok"):
        oc.finish()
    assert not (tmp_path / "out" / "_manifests" / f"{a.shard_id}.json").exists()


def test_rows_from_unknown_shard_raise(tmp_path: Path) -> None:
    """Rows whose source is not an open shard of this run are refused."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    with pytest.raises(RuntimeError, match="not an open shard"):
        oc.add(finished(make_shard(tmp_path, "zzz.jsonl"), [0], 1))


# ---------------------------------------------------------------- resume and fingerprints
def _run_once(tmp_path: Path, shards: list[ShardInfo], lineage: Lineage = LINEAGE, **extra: Any) -> OutputCommitter:
    oc = committer(tmp_path, lineage, **extra)
    for shard in oc.plan(shards):
        oc.add(finished(shard, [0, 1], 2))
    oc.finish()
    oc.mark_success()
    return oc


def test_plan_skips_committed_shards(tmp_path: Path) -> None:
    """Same fingerprint and input version: committed shards are skipped, others run."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    _run_once(tmp_path, [a])
    assert (tmp_path / "out" / "_SUCCESS").exists()

    again = committer(tmp_path)
    assert again.plan([a, b]) == [b]
    assert [m.shard_id for m in again.skipped] == [a.shard_id]
    assert list(again.open) == [b.shard_id]
    assert not (tmp_path / "out" / "_SUCCESS").exists()  # the output is incomplete again

    third = committer(tmp_path)
    changed = make_shard(tmp_path, "a.jsonl", version="v2")
    assert third.plan([changed]) == [changed]  # the input changed: redo it


def test_plan_everything_done_keeps_success(tmp_path: Path) -> None:
    """A rerun with nothing to do leaves _SUCCESS in place."""
    a = make_shard(tmp_path, "a.jsonl")
    _run_once(tmp_path, [a])
    again = committer(tmp_path)
    assert again.plan([a]) == []
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_other_fingerprint_needs_overwrite(tmp_path: Path) -> None:
    """A committed shard of another fingerprint raises OutputExistsError unless overwrite."""
    a = make_shard(tmp_path, "a.jsonl")
    _run_once(tmp_path, [a])
    other = Lineage("unused", None, None, "address", "1", "fp-two")
    with pytest.raises(OutputExistsError, match="fp-one") as info:
        committer(tmp_path, other).plan([a])
    assert "--overwrite" in str(info.value) and "fp-two" in str(info.value)

    oc = _run_once(tmp_path, [a], other, overwrite=True)
    assert [m.shard_id for m in oc.committed] == [a.shard_id]
    assert manifest(tmp_path / "out", a)["fingerprint"] == "fp-two"
    assert files_under(tmp_path / "out").count(f"part-{a.shard_id}-0.parquet") == 1


def test_overwrite_redoes_same_fingerprint(tmp_path: Path) -> None:
    """overwrite=True reprocesses even shards committed with this fingerprint."""
    a = make_shard(tmp_path, "a.jsonl")
    _run_once(tmp_path, [a])
    assert committer(tmp_path, overwrite=True).plan([a]) == [a]


# ---------------------------------------------------------------- staging and leftovers
def test_stale_parts_removed_at_commit(tmp_path: Path) -> None:
    """Leftovers of an interrupted commit of the same shard are removed; other shards' kept."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    out = tmp_path / "out"
    (out / "_rejects").mkdir(parents=True)
    stale = [out / f"part-{a.shard_id}-7.parquet", out / "_rejects" / f"part-{a.shard_id}-3.parquet"]
    for path in stale:
        pq.write_table(pa.table({"x": [1]}), path)
    foreign = out / f"part-{b.shard_id}-0.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)

    oc = committer(tmp_path)
    oc.plan([a])
    oc.add(finished(a, [0, 1], 2))
    assert all(not p.exists() for p in stale)
    assert foreign.exists()
    assert (out / f"part-{a.shard_id}-0.parquet").exists()
    assert manifest(out, a)["files"] == [f"part-{a.shard_id}-0.parquet"]


def test_staging_removed_after_finish(tmp_path: Path) -> None:
    """_staging holds work in progress during the run and is gone after finish."""
    a = make_shard(tmp_path, "a.jsonl")
    staging = tmp_path / "out" / "_staging"
    staging.mkdir(parents=True)
    (staging / "old-leftover").write_text("x", encoding="utf-8")
    oc = committer(tmp_path)
    oc.plan([a])
    oc.add(finished(a, [0], 3))
    assert (staging / a.shard_id).is_dir()
    oc.add(finished(a, [1, 2], 3))
    oc.finish()
    assert not staging.exists()
    assert "_staging" not in " ".join(files_under(tmp_path / "out"))


def test_output_under_a_staging_named_folder(tmp_path: Path) -> None:
    """An output prefix that itself lies under a folder named _staging still publishes correctly."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path, out="_staging/out")
    oc.plan([a])
    oc.add(finished(a, [0, 1], 2))
    oc.finish()
    out = tmp_path / "_staging" / "out"
    m = manifest(out, a)
    assert m["files"] == [f"part-{a.shard_id}-0.parquet"]
    assert pq.read_table(out / m["files"][0]).num_rows == 2


# ---------------------------------------------------------------- row groups and files
def test_small_row_groups_one_file(tmp_path: Path) -> None:
    """A small row_group_rows gives several row groups, still one file per shard."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path, row_group_rows=3)
    oc.plan([a])
    for start in range(0, 10, 2):
        oc.add(finished(a, [start, start + 1], 10, rejects={7: "invalid_json"}))
    oc.finish()
    m = manifest(tmp_path / "out", a)
    assert m["files"] == [f"part-{a.shard_id}-0.parquet"]
    parquet = pq.ParquetFile(tmp_path / "out" / m["files"][0])
    assert parquet.num_row_groups >= 3
    assert parquet.metadata.num_rows == 9
    rows = parquet.read().column("enrich_row_index").to_pylist()
    assert rows == [i for i in range(10) if i != 7]


def test_type_drift_rolls_to_second_file(tmp_path: Path) -> None:
    """An input column int in one batch and string in a later one: a second file, no row lost."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path, row_group_rows=2)
    oc.plan([a])
    oc.add(finished(a, [0, 1], 4, zips=[310000, 310001]))
    oc.add(finished(a, [2, 3], 4, zips=["31000X", "abc"]))
    oc.finish()
    out = tmp_path / "out"
    m = manifest(out, a)
    assert m["files"] == [f"part-{a.shard_id}-0.parquet", f"part-{a.shard_id}-1.parquet"]
    first, second = (pq.read_table(out / f) for f in m["files"])
    assert first.schema.field("zip").type == pa.int64()
    assert second.schema.field("zip").type == pa.string()
    assert first.column("zip").to_pylist() == [310000, 310001]
    assert second.column("zip").to_pylist() == ["31000X", "abc"]
    assert m["rows_ok"] == 4 and first.num_rows + second.num_rows == 4


def test_compatible_later_batch_stays_in_one_file(tmp_path: Path) -> None:
    """A later batch missing an input column (null-filled) or castable keeps the same file."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path, row_group_rows=2)
    oc.plan([a])
    oc.add(finished(a, [0, 1], 4, zips=["x", "y"]))
    oc.add(finished(a, [2, 3], 4))
    oc.finish()
    m = manifest(tmp_path / "out", a)
    assert len(m["files"]) == 1
    assert pq.read_table(tmp_path / "out" / m["files"][0]).column("zip").to_pylist() == ["x", "y", None, None]


def test_type_drift_within_one_row_group(tmp_path: Path) -> None:
    """Drifting batches buffered into the same row group still land, all rows kept."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)  # default row_group_rows: both batches are buffered together
    oc.plan([a])
    oc.add(finished(a, [0, 1], 4, zips=[310000, 310001]))
    oc.add(finished(a, [2, 3], 4, zips=["31000X", "abc"]))
    oc.finish()
    m = manifest(tmp_path / "out", a)
    assert m["rows_ok"] == 4
    assert sum(pq.read_table(tmp_path / "out" / f).num_rows for f in m["files"]) == 4
