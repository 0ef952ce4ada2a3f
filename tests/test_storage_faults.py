"""Storage faults against a real S3 API server: never lose a row.

A fault-injecting proxy (tests/faulty_s3.py) sits between s3fs/botocore, configured exactly
as production configures them (enrich.storage), and the loopback S3 server (moto). Transient
faults (503 SlowDown, 500 InternalError, connection resets) must be ridden out by retries,
with every row read and written exactly once; a permanent fault (403 AccessDenied) must fail
promptly with an error naming the s3:// path and the cause.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest
import s3fs
from pyarrow.fs import FSSpecHandler, PyFileSystem

from enrich import columns as C
from enrich import storage
from enrich.commit import OutputCommitter
from enrich.summary import build_summary
from enrich.config import JobConfig
from enrich.read import SHARD_END, InputError, ShardInfo, discover_shards, read_shard
from enrich.write import Lineage, write_attempt
from tests.faulty_s3 import FaultyS3Proxy, burst, deny, every
from tests.helpers import ADDRESS_FIELDS, stage_columns

LINEAGE = Lineage("unused", None, None, "address", "1", "fp-faults")
JSONL_ROWS = 40  # + 1 unparseable line, which becomes a rejected row
PARQUET_ROWS = 30  # in 3 row groups
CAUSE = re.compile(r"AccessDenied|Access Denied|Forbidden|permission", re.IGNORECASE)


@dataclass
class Inputs:
    direct: s3fs.S3FileSystem  # straight to moto, never through the proxy
    endpoint: str  # moto
    raw: str  # bucket
    out: str  # bucket
    texts: dict[str, list[str | None]]  # shard URL -> text per row index (None: unparseable)

    def cfg(self, endpoint: str, **extra: Any) -> JobConfig:
        return JobConfig.model_validate(
            {
                "input": f"s3://{self.raw}/day/",
                "output": f"s3://{self.out}/day",
                "model": "unused",
                "s3_endpoint": endpoint,
                "read_chunk_rows": 8,
                "row_group_rows": 16,
                **extra,
            }
        )


def _clear_caches() -> None:
    storage._filesystem.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def inputs(s3_endpoint: str) -> Iterator[Inputs]:
    """A JSONL and a Parquet shard under s3://<raw>/day/, uploaded directly to moto."""
    _clear_caches()
    tag = uuid.uuid4().hex[:8]
    raw, out = f"faults-raw-{tag}", f"faults-out-{tag}"
    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    direct.mkdir(raw)
    direct.mkdir(out)

    jsonl_texts: list[str | None] = [f"上海市浦东新区世纪大道{i}号 张{i} 1380000{i:04d}" for i in range(JSONL_ROWS)]
    lines = [json.dumps({"text": t, "shop": "s1", "n": i}, ensure_ascii=False) for i, t in enumerate(jsonl_texts)]
    lines.insert(17, '{"text": "broken')  # row 17 is unparseable: rejected, never lost
    jsonl_texts.insert(17, None)
    direct.pipe_file(f"{raw}/day/part-0.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))

    parquet_texts = [f"北京市海淀区中关村大街{i}号 李{i} 1390000{i:04d}" for i in range(PARQUET_ROWS)]
    table = pa.table({"text": parquet_texts, "shop": ["s2"] * PARQUET_ROWS})
    with direct.open(f"{raw}/day/part-1.parquet", "wb") as handle:
        pq.write_table(table, handle, row_group_size=10)
    direct.pipe_file(f"{raw}/day/_ignored.jsonl", b'{"text": "hidden"}\n')

    texts = {
        f"s3://{raw}/day/part-0.jsonl": jsonl_texts,
        f"s3://{raw}/day/part-1.parquet": list(parquet_texts),
    }
    yield Inputs(direct, s3_endpoint, raw, out, texts)
    _clear_caches()


def finished(chunk: pa.Table) -> pa.Table:
    """A read chunk as the generate + validate stages hand it to the committer: the task's
    output columns filled, some rows rejected (every 7th by a domain check, plus bad input)."""
    indexes = chunk.column(C.ROW_INDEX).to_pylist()
    reasons = [r or ("domain_check" if i % 7 == 3 else None) for r, i in zip(chunk.column(C.REASON).to_pylist(), indexes)]
    messages = [m or (f"row {i}: no province" if r else None) for m, r, i in zip(chunk.column(C.MESSAGE).to_pylist(), reasons, indexes)]
    chunk = chunk.set_column(chunk.schema.get_field_index(C.REASON), C.REASON, pa.array(reasons, pa.string()))
    chunk = chunk.set_column(chunk.schema.get_field_index(C.MESSAGE), C.MESSAGE, pa.array(messages, pa.string()))
    for name, values in stage_columns(indexes, [r is not None for r in reasons]).items():
        chunk = chunk.append_column(name, values)
    return chunk


def run_through(inputs: Inputs, endpoint: str, **extra: Any) -> tuple[list[ShardInfo], dict[str, list[pa.Table]]]:
    """Discover, read every shard, write each chunk as a worker would (attempt files), commit
    from the descriptors, write the real summary and _SUCCESS, all on `endpoint` (the proxy)."""
    cfg = inputs.cfg(endpoint, **extra)
    started = time.time()
    shards = discover_shards(cfg)
    chunks = {s.url: list(read_shard(s, cfg)) for s in shards}
    oc = OutputCommitter(cfg, LINEAGE, list(ADDRESS_FIELDS))
    assert oc.plan(shards) == shards
    fs, root = storage.filesystem(cfg.output, cfg.s3_endpoint)  # the workers' view of the output
    # Interleave the shards' chunks, as a stream of finished batches would.
    queues = [list(c) for c in chunks.values()]
    n = 0
    while any(queues):
        for queue in queues:
            if queue:
                rows = finished(queue.pop(0))
                oc.add(write_attempt(fs, root, "address", rows, LINEAGE, list(ADDRESS_FIELDS), f"w{n}"))
                n += 1
    oc.finish()
    summary = build_summary(cfg, LINEAGE, oc, started, started)
    oc.write_text("_summary.json", summary.model_dump_json(indent=2))
    oc.mark_success()
    return shards, chunks


def check_read(inputs: Inputs, shards: list[ShardInfo], chunks: dict[str, list[pa.Table]]) -> None:
    """Every input row was read once, in order, with its lineage; shards match a direct look."""
    direct = discover_shards(inputs.cfg(inputs.endpoint))
    assert [(s.url, s.format, s.size, s.version) for s in shards] == [
        (s.url, s.format, s.size, s.version) for s in direct
    ]
    assert [s.url for s in shards] == sorted(inputs.texts)
    for url, expected in inputs.texts.items():
        table = pa.concat_tables(chunks[url], promote_options="permissive")
        assert chunks[url][-1].column(C.REASON).to_pylist() == [SHARD_END]  # the count, announced
        table = table.filter(pa.compute.greater_equal(table.column(C.ROW_INDEX), 0))
        assert table.column(C.ROW_INDEX).to_pylist() == list(range(len(expected)))
        reasons = table.column(C.REASON).to_pylist()
        read = [None if r else t for t, r in zip(table.column(C.TEXT).to_pylist(), reasons)]
        assert read == expected  # None: the unparseable line, read as a bad_input row
        assert set(table.column(C.SOURCE_FILE).to_pylist()) == {url}
        assert chunks[url][-1].column(C.SHARD_ROWS).to_pylist() == [len(expected)]


def check_written(inputs: Inputs) -> None:
    """Via moto directly: each input row is in exactly one of enriched/rejects, once; the
    manifests' counts equal the rows in; nothing else is left behind."""
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": inputs.endpoint}, skip_instance_cache=True)
    root = f"{inputs.out}/day"
    afs = PyFileSystem(FSSpecHandler(fs))
    manifests = {}
    for path in fs.glob(f"{root}/_manifests/*.json"):
        m = json.loads(fs.cat_file(path))
        manifests[m["source"]] = m
    assert sorted(manifests) == sorted(inputs.texts)

    expected_files = {f"{root}/_SUCCESS", f"{root}/_summary.json"}
    keys: list[tuple[str, int]] = []
    for url, texts in inputs.texts.items():
        m = manifests[url]
        rejected = {i for i, t in enumerate(texts) if t is None or i % 7 == 3}
        assert m["rows_in"] == len(texts)
        assert (m["rows_ok"], m["rows_rejected"]) == (len(texts) - len(rejected), len(rejected))
        assert m["fingerprint"] == LINEAGE.fingerprint
        expected_files |= {f"{root}/_manifests/{m['shard_id']}.json"}
        expected_files |= {f"{root}/{f}" for f in m["files"] + m["reject_files"]}
        ok = pa.concat_tables([pq.read_table(f"{root}/{f}", filesystem=afs) for f in m["files"]],
                              promote_options="permissive")
        bad = pa.concat_tables([pq.read_table(f"{root}/{f}", filesystem=afs) for f in m["reject_files"]])
        assert (ok.num_rows, bad.num_rows) == (m["rows_ok"], m["rows_rejected"])
        for index, text in zip(ok.column("enrich_row_index").to_pylist(), ok.column("text").to_pylist()):
            assert text == texts[index] and index not in rejected
        assert sorted(bad.column("row_index").to_pylist()) == sorted(rejected)
        keys += [(s, i) for s, i in zip(ok.column("enrich_source_file").to_pylist(), ok.column("enrich_row_index").to_pylist())]
        keys += [(s, i) for s, i in zip(bad.column("source_file").to_pylist(), bad.column("row_index").to_pylist())]
    every_row = [(url, i) for url, texts in inputs.texts.items() for i in range(len(texts))]
    assert sorted(keys) == sorted(every_row)  # each row once: none lost, none doubled

    summary = json.loads(fs.cat_file(f"{root}/_summary.json"))  # the real build_summary's record
    rows_ok = sum(m["rows_ok"] for m in manifests.values())
    assert (summary["rows_in"], summary["rows_ok"], summary["rows_rejected"]) == (
        len(every_row), rows_ok, len(every_row) - rows_ok)
    assert summary["invariant_ok"] is True and summary["shards_processed"] == 2
    assert summary["output"] == f"s3://{inputs.out}/day"
    assert set(fs.find(root)) == expected_files  # no lease, .tmp, orphan or duplicate parts left


# ---------------------------------------------------------------- transient faults
@pytest.mark.slow  # ~120 requests, ~40 faults, each retried after botocore's backoff: ~30 s
def test_transient_faults_every_row_read_and_written_once(inputs: Inputs) -> None:
    """Every 3rd request fails (503 SlowDown, 500 InternalError, connection reset in turn):
    discovery, reads, staging, commit, summary and _SUCCESS all complete, no row lost or
    doubled."""
    with FaultyS3Proxy(inputs.endpoint, every(3, ("503", "500", "reset"))) as proxy:
        shards, chunks = run_through(inputs, proxy.url)
        faults, requests = dict(proxy.faults), proxy.requests
    assert faults.keys() == {"503", "500", "reset"}
    assert min(faults.values()) >= 3, faults
    assert sum(faults.values()) >= requests // 3 - 1, (faults, requests)
    check_read(inputs, shards, chunks)
    check_written(inputs)


def test_lost_responses_every_row_written_once(inputs: Inputs) -> None:
    """Harder faults: the request took effect upstream but its response is lost (reset
    after forwarding) or cut off halfway. Retries repeat requests that already happened
    (a copy, a delete, a put): still each row exactly once."""
    with FaultyS3Proxy(inputs.endpoint, every(4, ("reset_after", "truncate"))) as proxy:
        shards, chunks = run_through(inputs, proxy.url)
        faults = dict(proxy.faults)
    assert faults.keys() == {"reset_after", "truncate"} and min(faults.values()) >= 3, faults
    check_read(inputs, shards, chunks)
    check_written(inputs)


# ---------------------------------------------------------------- permanent faults
def _denied(inputs: Inputs) -> FaultyS3Proxy:
    return FaultyS3Proxy(inputs.endpoint, deny(f"{inputs.raw}/day/"))


def test_access_denied_fails_fast_without_retry_storm(inputs: Inputs) -> None:
    """A 403 is permanent: the run fails within seconds, after few requests, not 10 retries
    with backoff per call."""
    with _denied(inputs) as proxy:
        start = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - the kind is checked in the tests below
            discover_shards(inputs.cfg(proxy.url))
        elapsed = time.monotonic() - start
        assert 1 <= proxy.faults["403"] <= 3, proxy.log
    assert elapsed < 5


def test_access_denied_on_discover_names_path_and_cause(inputs: Inputs) -> None:
    with _denied(inputs) as proxy:
        with pytest.raises((InputError, OSError)) as info:
            discover_shards(inputs.cfg(proxy.url))
    message = str(info.value)
    assert f"s3://{inputs.raw}/day" in message, message
    assert CAUSE.search(message), message


@pytest.mark.parametrize("name", ["part-0.jsonl", "part-1.parquet"])
def test_access_denied_on_read_names_path_and_cause(inputs: Inputs, name: str) -> None:
    """Listing worked but the object is forbidden (e.g. a KMS key or object ACL)."""
    url = f"s3://{inputs.raw}/day/{name}"
    shard = next(s for s in discover_shards(inputs.cfg(inputs.endpoint)) if s.url == url)
    with _denied(inputs) as proxy:
        with pytest.raises((InputError, OSError)) as info:
            list(read_shard(shard, inputs.cfg(proxy.url)))
        assert proxy.faults["403"] >= 1
    message = str(info.value)
    assert url in message, message
    assert CAUSE.search(message), message


# ---------------------------------------------------------------- retry layers
def _consecutive(proxy: FaultyS3Proxy, match: str) -> int:
    """The longest run of requests in a row (by arrival) on one resource containing `match`."""
    best, run, last = 0, 0, None
    for _, method, resource, _ in proxy.log:
        if match in resource and method == "PUT":
            run = run + 1 if resource == last else 1
            best, last = max(best, run), resource
    return best


def test_more_faults_in_a_row_than_s3fs_retries_ride_on_adaptive_retries(inputs: Inputs) -> None:
    """7 consecutive 503s on the first output file: s3fs alone retries 5 times, so only
    botocore's adaptive retries (enrich.storage.S3_RETRIES) get the object written."""
    with FaultyS3Proxy(inputs.endpoint, burst("/part-", 7, "503", method="PUT")) as proxy:
        fs, _ = storage.filesystem(f"s3://{inputs.out}", proxy.url)
        assert fs.connect().meta.config.retries["mode"] == "adaptive"  # what production uses
        shards, chunks = run_through(inputs, proxy.url)
        assert proxy.faults["503"] == 7
        assert _consecutive(proxy, "/part-") == 8 > s3fs.S3FileSystem.retries  # 7 refused + 1 written
    check_read(inputs, shards, chunks)
    check_written(inputs)


def test_without_botocore_retries_the_same_faults_fail_naming_the_path(
    inputs: Inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: botocore's retries off, s3fs's 5 tries are exhausted; the run fails with
    the object's s3:// path (not s3fs's bare "SlowDown") and commits nothing of that shard."""
    monkeypatch.setattr(storage, "S3_RETRIES", {"total_max_attempts": 1, "mode": "standard"})
    _clear_caches()
    with FaultyS3Proxy(inputs.endpoint, burst("/part-", 7, "503", method="PUT")) as proxy:
        with pytest.raises(OSError) as info:
            run_through(inputs, proxy.url)
        assert proxy.faults["503"] == s3fs.S3FileSystem.retries
    message = str(info.value)
    assert re.search(rf"cannot write s3://{inputs.out}/day/part-[0-9a-f]{{16}}-w0\.parquet", message), message
    assert "SlowDown" in message or "reduce your request rate" in message, message


def test_exhausted_retries_on_a_commit_fail_the_run_naming_the_manifest(
    inputs: Inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest PUT that keeps failing (500 each time, botocore's attempts cut to 3 to keep
    the test short): the commit re-reads, retries, then fails naming the manifest; the shard
    has no manifest, so a rerun redoes it; nothing half-committed."""
    monkeypatch.setattr(storage, "S3_RETRIES", {"total_max_attempts": 3, "mode": "adaptive"})
    _clear_caches()
    with FaultyS3Proxy(inputs.endpoint, burst("/_manifests/", None, "500", method="PUT")) as proxy:
        with pytest.raises(OSError) as info:
            run_through(inputs, proxy.url)
        assert proxy.faults["500"] == 3 * 4  # botocore's 3 attempts x the committer's 4 tries
    message = str(info.value)
    assert re.search(rf"cannot commit s3://{inputs.out}/day/_manifests/[0-9a-f]{{16}}\.json after 4 tries", message)
    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": inputs.endpoint}, skip_instance_cache=True)
    assert not direct.exists(f"{inputs.out}/day/_manifests") or not direct.ls(f"{inputs.out}/day/_manifests")
