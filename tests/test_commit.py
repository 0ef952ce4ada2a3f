"""Unit tests for enrich.commit.OutputCommitter: worker-written attempts, the driver's ledger,
one manifest write per shard. Driven with synthetic finished rows on the local filesystem."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.commit import IncompleteShardsError, OutputCommitter, OutputExistsError, StaleShardsError
from enrich.config import JobConfig
from enrich.lease import OutputLockedError
from enrich.output import read_output
from enrich.read import ShardInfo
from enrich.write import Lineage
from tests.commit_fixtures import counter_ids, deliver, finished, marker, write
from tests.helpers import ADDRESS_FIELDS

LINEAGE = Lineage("unused", None, None, "address", "1", "fp-one")
_DRIVERS = itertools.count()  # each committer its own run id


def make_cfg(tmp_path: Path, out: str = "out", **extra: Any) -> JobConfig:
    return JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(tmp_path / out), "model": "unused", **extra}
    )


def make_shard(tmp_path: Path, name: str, version: str = "v1") -> ShardInfo:
    """A shard URL under the input folder (no file needed to commit it)."""
    return ShardInfo(str(tmp_path / "in" / name), "jsonl", 1000, version)


def committer(tmp_path: Path, lineage: Lineage = LINEAGE, **extra: Any) -> OutputCommitter:
    ttl = extra.pop("lease_ttl", 0.0)  # tests run many drivers one after another in one process
    return OutputCommitter(make_cfg(tmp_path, **extra), lineage, list(ADDRESS_FIELDS), lease_ttl=ttl,
                           ids=counter_ids(f"d{next(_DRIVERS)}-"))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def manifest(root: Path, shard: ShardInfo) -> dict[str, Any]:
    return json.loads((root / "_manifests" / f"{shard.shard_id}.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- layout
def test_commit_layout_manifests_and_schemas(tmp_path: Path) -> None:
    """Two shards: attempt files and manifests at their documented names and schemas."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    assert oc.plan([a, b]) == [a, b]
    deliver(oc, finished(a, [0, 1, 2, 3, 4], 5, rejects={1: "invalid_json", 3: "domain_check"}), "w1")
    deliver(oc, finished(b, [0, 1, 2], 3), "w2")
    oc.finish()
    oc.mark_success()
    out = tmp_path / "out"
    sa, sb = a.shard_id, b.shard_id
    assert files_under(out) == sorted([
        f"part-{sa}-w1.parquet", f"part-{sb}-w2.parquet", f"_rejects/part-{sa}-w1.parquet",
        f"_manifests/{sa}.json", f"_manifests/{sb}.json", "_SUCCESS",
    ])  # no staging, no lease left, no tmp files
    ma = manifest(out, a)
    assert {k: ma[k] for k in ("shard_id", "source", "size", "version", "fingerprint", "rows_in", "rows_ok",
                                "rows_rejected", "rejects_by_reason", "output_tokens", "files", "reject_files")} == {
        "shard_id": sa, "source": a.url, "size": 1000, "version": "v1", "fingerprint": "fp-one",
        "rows_in": 5, "rows_ok": 3, "rows_rejected": 2,
        "rejects_by_reason": {"domain_check": 1, "invalid_json": 1}, "output_tokens": 50,
        "files": [f"part-{sa}-w1.parquet"], "reject_files": [f"_rejects/part-{sa}-w1.parquet"],
    }
    assert ma["file_rows"] == {f"part-{sa}-w1.parquet": 3, f"_rejects/part-{sa}-w1.parquet": 2}
    assert ma["file_bytes"][f"part-{sa}-w1.parquet"] == (out / f"part-{sa}-w1.parquet").stat().st_size
    assert ma["quality"]["rows_ok"] == 3 and ma["quality"]["rejects_by_reason"] == {"invalid_json": 1, "domain_check": 1}
    assert ma["commit_id"] and ma["run_id"] == oc.run_id
    mb = manifest(out, b)
    assert (mb["rows_in"], mb["rows_ok"], mb["rows_rejected"], mb["reject_files"]) == (3, 3, 0, [])
    assert [m.shard_id for m in oc.committed] == [sa, sb]

    ok = pq.read_table(out / f"part-{sa}-w1.parquet")
    assert ok.column_names == ["order_id", "text", *ADDRESS_FIELDS, *C.LINEAGE_SCHEMA.names]
    assert ok.column("enrich_row_index").to_pylist() == [0, 2, 4]
    assert ok.column("province").to_pylist() == ["province0", "province2", "province4"]
    assert ok.column("enrich_row_id").to_pylist() == [f"{sa}-{i}" for i in (0, 2, 4)]
    bad = pq.read_table(out / "_rejects" / f"part-{sa}-w1.parquet")
    assert bad.schema.equals(C.REJECTS_SCHEMA)
    assert bad.column("row_index").to_pylist() == [1, 3]
    assert bad.column("reason").to_pylist() == ["invalid_json", "domain_check"]
    assert json.loads(bad.column("input_json")[0].as_py()) == {"order_id": f"{a.url[-7:]}#1", "text": "地址1"}
    # After _SUCCESS a plain dataset read of the folder sees exactly the committed rows.
    assert pq.read_table(out).num_rows == 6
    assert read_output(str(out)).count_rows() == 6 and read_output(str(out), rejects=True).count_rows() == 2


def test_all_rejected_and_empty_shards(tmp_path: Path) -> None:
    """All rows rejected: no enriched file; an empty shard commits on its end marker alone."""
    a, e = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "e.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, e])
    deliver(oc, finished(a, [0, 1], 2, rejects={0: "bad_input", 1: "bad_input"}), "w1")
    deliver(oc, marker(e, 0), "w2")
    assert [m.shard_id for m in oc.committed] == [a.shard_id, e.shard_id]
    m = manifest(tmp_path / "out", a)
    assert (m["rows_ok"], m["rows_rejected"], m["files"], len(m["reject_files"])) == (0, 2, [], 1)
    m = manifest(tmp_path / "out", e)
    assert (m["rows_in"], m["rows_ok"], m["rows_rejected"], m["files"], m["reject_files"]) == (0, 0, 0, [], [])


# ---------------------------------------------------------------- when a shard commits
def test_shard_commits_when_complete_before_finish(tmp_path: Path) -> None:
    """Rows arrive out of order; the shard commits once its count is known and reached."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, b])
    manifests = tmp_path / "out" / "_manifests"
    deliver(oc, finished(a, [3, 4], 5), "w1")  # the end marker first: count known, rows missing
    assert not (manifests / f"{a.shard_id}.json").exists()
    deliver(oc, pa.concat_tables([finished(a, [0, 1, 2]), finished(b, [0])]), "w2")  # completes a, not b
    assert (manifests / f"{a.shard_id}.json").exists() and not (manifests / f"{b.shard_id}.json").exists()
    assert [m.shard_id for m in oc.committed] == [a.shard_id]
    deliver(oc, finished(b, [1, 2], 3), "w3")
    assert oc.ledgers == {}
    assert sorted(read_output(str(tmp_path / "out")).to_table().column("enrich_row_index").to_pylist()) == [0, 0, 1, 1, 2, 2, 3, 4]


def test_short_shard_is_not_committed(tmp_path: Path) -> None:
    """The right behaviour for what used to commit: rows without the shard's end count, or
    fewer rows than the count, never commit; finish fails naming the shard."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, b])
    deliver(oc, finished(a, [0, 1, 2]), "w1")  # no end marker
    deliver(oc, finished(b, [0, 4], 5), "w2")  # count 5, rows 1-3 never arrive
    with pytest.raises(IncompleteShardsError) as info:
        oc.finish()
    message = str(info.value)
    assert a.url in message and "unknown" in message and b.url in message and "(1, 4)" in message
    assert not (tmp_path / "out" / "_manifests").exists()
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_duplicates_are_trash_and_late_duplicates_dropped(tmp_path: Path) -> None:
    """A re-run batch (same rows, new attempt files) is dropped and its files deleted; a late
    duplicate for an already committed shard is dropped too, never an error."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, b])
    deliver(oc, finished(a, [0, 1, 2]), "w1")
    deliver(oc, finished(a, [0, 1, 2]), "w1-again")  # Ray re-ran the batch
    deliver(oc, finished(b, [0, 1, 1, 2], 3), "w2")  # a repeat inside one batch: written once
    deliver(oc, finished(a, [3, 4], 5), "w3")
    deliver(oc, finished(a, [3, 4], 5), "w3-late")  # after a committed
    assert oc.duplicates_dropped == 1 and oc.late_dropped == 1
    oc.finish()
    out = tmp_path / "out"
    assert manifest(out, a)["files"] == [f"part-{a.shard_id}-w1.parquet", f"part-{a.shard_id}-w3.parquet"]
    assert manifest(out, b)["rows_in"] == 3 and manifest(out, b)["rows_ok"] == 3
    assert not [f for f in files_under(out) if "again" in f or "late" in f]  # trash removed


def test_partial_overlap_is_resolved_without_doubling(tmp_path: Path) -> None:
    """A retry bundled differently crosses earlier deliveries: a delivery covering whole
    earlier ones replaces them; a crossing one is held as a spare and never listed."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    oc = committer(tmp_path)
    oc.plan([a, b])
    deliver(oc, finished(a, [0, 1]), "a1")
    deliver(oc, finished(a, [0, 1, 2, 3]), "a2")  # covers a1 whole: replaces it
    deliver(oc, finished(a, [3, 4, 5], 6), "a3")  # crosses a2 at 3: a spare
    assert a.shard_id in oc.ledgers and oc.ledgers[a.shard_id].spares
    deliver(oc, finished(a, [4, 5], 6), "a4")  # completes a without the spare
    m = manifest(tmp_path / "out", a)
    assert m["files"] == [f"part-{a.shard_id}-a2.parquet", f"part-{a.shard_id}-a4.parquet"]
    # A shard that only a crossing delivery could complete stays uncommitted: the run fails.
    deliver(oc, finished(b, [0, 1]), "b1")
    deliver(oc, finished(b, [1, 2], 3), "b2")
    with pytest.raises(IncompleteShardsError, match="b.jsonl"):
        oc.finish()
    rows = read_output(str(tmp_path / "out")).to_table().column("enrich_row_index").to_pylist()
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]  # only a, each row once


def test_rows_from_unknown_shard_raise(tmp_path: Path) -> None:
    oc = committer(tmp_path)
    oc.plan([make_shard(tmp_path, "a.jsonl")])
    with pytest.raises(RuntimeError, match="not an open shard"):
        deliver(oc, finished(make_shard(tmp_path, "zzz.jsonl"), [0], 1), "w")


# ---------------------------------------------------------------- resume, fingerprints, overwrite
def _run_once(tmp_path: Path, shards: list[ShardInfo], lineage: Lineage = LINEAGE, tag: str = "x",
              **extra: Any) -> OutputCommitter:
    oc = committer(tmp_path, lineage, **extra)
    for shard in oc.plan(shards):
        deliver(oc, finished(shard, [0, 1], 2), f"{tag}{shard.url[-7]}")
    oc.finish()
    oc.mark_success()
    return oc


def test_plan_skips_committed_shards(tmp_path: Path) -> None:
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    _run_once(tmp_path, [a])
    assert (tmp_path / "out" / "_SUCCESS").exists()
    again = committer(tmp_path)
    assert again.plan([a, b]) == [b]
    assert [m.shard_id for m in again.skipped] == [a.shard_id]
    assert not (tmp_path / "out" / "_SUCCESS").exists()  # the output is incomplete again
    changed = make_shard(tmp_path, "a.jsonl", version="v2")
    assert committer(tmp_path).plan([changed]) == [changed]  # the input changed: redo it


def test_a_renamed_input_is_refused_not_doubled(tmp_path: Path) -> None:
    """The same rows under a new file name would sit beside the old shard's rows: refused
    before any work (also with --overwrite), and the output is left as it was."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    _run_once(tmp_path, [a])
    before = files_under(tmp_path / "out")
    for extra in ({}, {"overwrite": True}):
        with pytest.raises(StaleShardsError, match="a.jsonl.*does not list") as info:
            committer(tmp_path, **extra).plan([b])
        assert isinstance(info.value, OutputExistsError)  # exit 2: nothing ran
    assert [f for f in files_under(tmp_path / "out") if not f.startswith("_lease")] == \
        [f for f in before if not f.startswith("_lease")]
    assert committer(tmp_path).plan([a, b]) == [b]  # both listed: a is done, b to do


def test_plan_everything_done_keeps_success(tmp_path: Path) -> None:
    a = make_shard(tmp_path, "a.jsonl")
    _run_once(tmp_path, [a])
    again = committer(tmp_path)
    assert again.plan([a]) == []
    again.finish()
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_other_fingerprint_needs_overwrite(tmp_path: Path) -> None:
    a = make_shard(tmp_path, "a.jsonl")
    _run_once(tmp_path, [a])
    other = Lineage("unused", None, None, "address", "1", "fp-two")
    with pytest.raises(OutputExistsError, match="fp-one") as info:
        committer(tmp_path, other).plan([a])
    assert "--overwrite" in str(info.value) and "fp-two" in str(info.value)
    oc = _run_once(tmp_path, [a], other, tag="y", overwrite=True)
    assert [m.shard_id for m in oc.committed] == [a.shard_id]
    assert manifest(tmp_path / "out", a)["fingerprint"] == "fp-two"
    assert [f for f in files_under(tmp_path / "out") if f.startswith("part-")] == [f"part-{a.shard_id}-ya.parquet"]


def test_overwrite_keeps_old_files_until_the_new_manifest_lands(tmp_path: Path) -> None:
    """The old data is deleted only after the replacing manifest is written: an overwrite
    stopped before its commit leaves the old shard whole (old manifest, old files)."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    _run_once(tmp_path, [a, b])
    before = {s.shard_id: manifest(tmp_path / "out", s) for s in (a, b)}
    oc = committer(tmp_path, overwrite=True)
    assert oc.plan([a, b]) == [a, b]
    deliver(oc, finished(a, [0, 1], 2), "new-a")  # a is replaced; b is not reached ("killed")
    assert manifest(tmp_path / "out", a)["files"] == [f"part-{a.shard_id}-new-a.parquet"]
    assert not (tmp_path / "out" / f"part-{a.shard_id}-xa.parquet").exists()
    assert manifest(tmp_path / "out", b) == before[b.shard_id]
    assert (tmp_path / "out" / f"part-{b.shard_id}-xb.parquet").exists()
    assert read_output(str(tmp_path / "out")).count_rows() == 4


def test_unlisted_part_files_removed_at_finish(tmp_path: Path) -> None:
    """Files of a crashed attempt (no manifest lists them) are deleted by the next finish;
    files another shard's manifest lists are kept."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    _run_once(tmp_path, [b])
    oc = committer(tmp_path)
    assert oc.plan([a, b]) == [a]
    write(oc, finished(a, [0, 1, 2]), "crashed")  # written, never delivered
    deliver(oc, finished(a, [0, 1], 2), "w")
    assert (tmp_path / "out" / f"part-{a.shard_id}-crashed.parquet").exists()
    oc.finish()
    parts = [f for f in files_under(tmp_path / "out") if "part-" in f]
    assert parts == sorted([f"part-{a.shard_id}-w.parquet", f"part-{b.shard_id}-xb.parquet"])


def test_output_under_a_staging_named_folder(tmp_path: Path) -> None:
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path, out="_staging/out")
    oc.plan([a])
    deliver(oc, finished(a, [0, 1], 2), "w")
    oc.finish()
    m = manifest(tmp_path / "_staging" / "out", a)
    assert pq.read_table(tmp_path / "_staging" / "out" / m["files"][0]).num_rows == 2


def test_type_drift_between_batches_keeps_every_value(tmp_path: Path) -> None:
    """An input column int in one batch and string in a later one: each attempt file keeps
    its own type, no row lost (the input reader decides one schema per run upstream)."""
    a = make_shard(tmp_path, "a.jsonl")
    oc = committer(tmp_path)
    oc.plan([a])
    deliver(oc, finished(a, [0, 1], zips=[310000, 310001]), "w1")
    deliver(oc, finished(a, [2, 3], 4, zips=["31000X", "abc"]), "w2")
    m = manifest(tmp_path / "out", a)
    first, second = (pq.read_table(tmp_path / "out" / f) for f in m["files"])
    assert first.column("zip").to_pylist() == [310000, 310001]
    assert second.column("zip").to_pylist() == ["31000X", "abc"]


# ---------------------------------------------------------------- one writer per output
def test_second_driver_is_refused_and_a_stale_lease_taken_over(tmp_path: Path) -> None:
    a = make_shard(tmp_path, "a.jsonl")
    first = committer(tmp_path, lease_ttl=600.0)
    first.plan([a])
    with pytest.raises(OutputLockedError, match="being written by run") as info:
        committer(tmp_path, lease_ttl=600.0).plan([a])
    assert first.run_id in str(info.value) and "_lease.json" in str(info.value)
    lease = json.loads((tmp_path / "out" / "_lease.json").read_text())
    lease["expires"] = 0  # the first driver died long ago
    (tmp_path / "out" / "_lease.json").write_text(json.dumps(lease))
    second = committer(tmp_path, lease_ttl=600.0)
    assert second.plan([a]) == [a]
    assert json.loads((tmp_path / "out" / "_lease.json").read_text())["run_id"] == second.run_id


def test_manifest_write_with_a_lost_response_is_recognised(tmp_path: Path) -> None:
    """The PUT landed but its answer was lost (an OSError after the write): the committer
    re-reads, finds its commit id, and carries on (Iceberg's pattern); no duplicate, no error."""

    class LostResponse(fsspec.implementations.memory.MemoryFileSystem):
        protocol = "lossy"
        cachable = False
        lost = 0

        def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kw: Any) -> None:
            super().pipe_file(path, value, mode=mode, **kw)
            if "_manifests" in path and not self.lost:
                self.lost += 1
                raise OSError("connection reset after the request was sent")

    fs = LostResponse(skip_instance_cache=True)
    fs.store, fs.pseudo_dirs = {}, [""]
    a = make_shard(tmp_path, "a.jsonl")
    oc = OutputCommitter(make_cfg(tmp_path), LINEAGE, list(ADDRESS_FIELDS), storage=(fs, "/out"))
    oc.plan([a])
    deliver(oc, finished(a, [0, 1], 2), "w")
    assert fs.lost == 1 and [m.shard_id for m in oc.committed] == [a.shard_id]
    assert json.loads(fs.cat_file(f"/out/_manifests/{a.shard_id}.json"))["commit_id"] == oc.committed[0].commit_id


def test_model_digest_changes_when_the_model_is_replaced(tmp_path: Path) -> None:
    from enrich.model_digest import model_digest

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"a" * 100)
    first = model_digest(str(model))
    assert first and model_digest(str(model)) == first
    (model / "weights.safetensors").write_bytes(b"b" * 100)  # same size, new content
    os.utime(model / "weights.safetensors", ns=(1, 10**18))
    assert model_digest(str(model)) != first
    assert model_digest("Qwen/Qwen3-0.6B") is None  # a hub id: its revision pins it instead


def test_a_dead_drivers_lease_on_this_host_is_taken_over(tmp_path: Path) -> None:
    """A killed driver's lease (same host, its pid gone) does not block the rerun."""
    import socket
    import subprocess

    a = make_shard(tmp_path, "a.jsonl")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_lease.json").write_text(json.dumps(
        {"run_id": "killed", "host": socket.gethostname(), "pid": dead.pid, "expires": 4e9}))
    oc = committer(tmp_path, lease_ttl=600.0)
    assert oc.plan([a]) == [a]
    other_host = {"run_id": "remote", "host": "elsewhere", "pid": 1, "expires": 4e9}
    (tmp_path / "out" / "_lease.json").write_text(json.dumps(other_host))
    with pytest.raises(OutputLockedError, match="remote"):
        committer(tmp_path, lease_ttl=600.0).plan([a])


def test_read_output_of_a_multi_task_root_and_orphans(tmp_path: Path) -> None:
    """read_output reads exactly the manifest-listed files: an orphan part file is ignored;
    a multi-task root needs task= and names its tasks."""
    a = make_shard(tmp_path, "a.jsonl")
    for label in ("address", "keywords"):
        oc = committer(tmp_path, out=f"out/{label}")
        oc.plan([a])
        deliver(oc, finished(a, [0, 1, 2], 3, rejects={2: "truncated"}), f"w-{label}")
        oc.finish()
        oc.mark_success()
    orphan = tmp_path / "out" / "address" / f"part-{a.shard_id}-orphan.parquet"
    pq.write_table(pq.read_table(tmp_path / "out" / "address" / f"part-{a.shard_id}-w-address.parquet"), orphan)
    with pytest.raises(ValueError, match="address, keywords"):
        read_output(str(tmp_path / "out"))
    assert read_output(str(tmp_path / "out"), task="address").count_rows() == 2  # not 4
    assert read_output(str(tmp_path / "out"), task="keywords", rejects=True).count_rows() == 1
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_output(str(tmp_path / "nothing-here"))


def test_an_interrupted_overwrite_resumes_and_a_new_one_redoes_everything(tmp_path: Path) -> None:
    """--overwrite killed after replacing a: rerun with --overwrite keeps a's new commit and
    redoes only b; once it succeeded, a fresh --overwrite redoes both again."""
    a, b = make_shard(tmp_path, "a.jsonl"), make_shard(tmp_path, "b.jsonl")
    other = Lineage("unused", None, None, "address", "1", "fp-two")
    _run_once(tmp_path, [a, b])
    killed = committer(tmp_path, other, overwrite=True)
    assert killed.plan([a, b]) == [a, b]
    deliver(killed, finished(a, [0, 1], 2), "k-a")  # a replaced, then the driver died
    resumed = committer(tmp_path, other, overwrite=True)
    assert resumed.plan([a, b]) == [b] and [m.shard_id for m in resumed.skipped] == [a.shard_id]
    deliver(resumed, finished(b, [0, 1], 2), "r-b")
    resumed.finish()
    resumed.mark_success()
    assert not (tmp_path / "out" / "_overwrite.json").exists()
    assert {manifest(tmp_path / "out", s)["fingerprint"] for s in (a, b)} == {"fp-two"}
    assert committer(tmp_path, other, overwrite=True).plan([a, b]) == [a, b]
