"""Input items against a real S3 API server (moto via s3fs, as production): access denied
is never a skippable bad file; inputs are read at the etag recorded when listing; prepare
copies only the tokenizer's files of an s3:// model."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import s3fs

from enrich import columns as C
from enrich import storage
from enrich.config import JobConfig
from enrich.read import SHARD_END, InputError, StorageError, discover_shards, passthrough_schema, read_shard
from tests.faulty_s3 import FaultyS3Proxy, deny


def _clear_caches() -> None:
    # A fresh process, as a Ray worker is: no listing cached from the driver's discovery.
    storage._filesystem.cache_clear()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3_endpoint: str) -> Iterator[tuple[s3fs.S3FileSystem, str]]:
    _clear_caches()
    name = f"input-{uuid.uuid4().hex[:8]}"
    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    direct.mkdir(name)
    yield direct, name
    _clear_caches()


def cfg_for(bucket: str, endpoint: str, **extra: Any) -> JobConfig:
    return JobConfig.model_validate({
        "input": f"s3://{bucket}/in/", "output": f"s3://{bucket}/out", "model": "unused",
        "s3_endpoint": endpoint, **extra,
    })


def put(direct: s3fs.S3FileSystem, key: str, fmt: str, texts: list[str]) -> None:
    if fmt == "jsonl":
        direct.pipe_file(key, "".join(json.dumps({"text": t}) + "\n" for t in texts).encode("utf-8"))
    else:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"text": texts}), buffer)
        direct.pipe_file(key, buffer.getvalue())


# ---------------------------------------------------------------- 4. access denied
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_access_denied_is_not_a_bad_file(bucket: tuple[s3fs.S3FileSystem, str], s3_endpoint: str, fmt: str) -> None:
    """With --on-bad-file skip, a 403 on an input fails (StorageError naming the URL), and is
    not turned into a skipped-file marker row: the run must not succeed without the file."""
    direct, name = bucket
    put(direct, f"{name}/in/a.{fmt}", fmt, ["x", "y"])
    shard = discover_shards(cfg_for(name, s3_endpoint))[0]
    _clear_caches()
    with FaultyS3Proxy(s3_endpoint, deny(f"{name}/in/")) as proxy:
        with pytest.raises(StorageError) as info:
            list(read_shard(shard, cfg_for(name, proxy.url, on_bad_file="skip")))
        assert proxy.faults["403"] >= 1
    assert shard.url in str(info.value)
    assert not isinstance(info.value, InputError)


def test_access_denied_at_planning_fails(bucket: tuple[s3fs.S3FileSystem, str], s3_endpoint: str) -> None:
    direct, name = bucket
    put(direct, f"{name}/in/a.parquet", "parquet", ["x"])
    shards = discover_shards(cfg_for(name, s3_endpoint))
    _clear_caches()
    with FaultyS3Proxy(s3_endpoint, deny(f"{name}/in/")) as proxy:
        with pytest.raises(StorageError, match=f"s3://{name}/in/a.parquet"):
            passthrough_schema(shards, cfg_for(name, proxy.url, on_bad_file="skip"))


# ---------------------------------------------------------------- 8. version at listing
@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-worker", "listing-cached"])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_object_replaced_since_listing_fails(
    bucket: tuple[s3fs.S3FileSystem, str], s3_endpoint: str, fmt: str, fresh: bool
) -> None:
    """Replaced between listing and reading: the shard fails naming it, whether the reader
    sees the new etag at open (a fresh worker) or the listed one (If-Match then refuses)."""
    direct, name = bucket
    put(direct, f"{name}/in/a.{fmt}", fmt, ["old"] * 3)
    cfg = cfg_for(name, s3_endpoint)
    shard = discover_shards(cfg)[0]
    put(direct, f"{name}/in/a.{fmt}", fmt, ["new"] * 3)  # same size, another etag
    if fresh:
        _clear_caches()
    with pytest.raises(InputError, match="changed since it was listed") as info:
        list(read_shard(shard, cfg))
    assert shard.url in str(info.value)


def test_unchanged_object_reads(bucket: tuple[s3fs.S3FileSystem, str], s3_endpoint: str) -> None:
    direct, name = bucket
    put(direct, f"{name}/in/a.jsonl", "jsonl", ["a", "b"])
    put(direct, f"{name}/in/b.parquet", "parquet", ["c"])
    cfg = cfg_for(name, s3_endpoint)
    shards = discover_shards(cfg)
    schema = passthrough_schema(shards, cfg)
    _clear_caches()
    table = pa.concat_tables([c for s in shards for c in read_shard(s, cfg, schema)])
    reasons = table.column(C.REASON).to_pylist()
    assert [t for t, r in zip(table.column(C.TEXT).to_pylist(), reasons) if r is None] == ["a", "b", "c"]
    assert table.filter(pc.equal(table.column(C.REASON), SHARD_END)).column(C.SHARD_ROWS).to_pylist() == [2, 1]


# ---------------------------------------------------------------- 7. tokenizer only
def test_prepare_copies_only_the_tokenizer(
    bucket: tuple[s3fs.S3FileSystem, str], s3_endpoint: str, tiny_model: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from enrich.prepare import load_tokenizer
    from transformers import AutoTokenizer

    direct, name = bucket
    direct.put(str(tiny_model), f"{name}/model", recursive=True)
    weights = [p for p in direct.find(f"{name}/model") if p.endswith((".safetensors", ".bin"))]
    assert weights, "the checkpoint has weights to leave behind"
    monkeypatch.setenv("ENRICH_MODEL_CACHE", str(tmp_path / "cache"))
    load_tokenizer.cache_clear()
    tokenizer = load_tokenizer(f"s3://{name}/model", None, s3_endpoint)
    copied = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert "tokenizer.json" in copied or "vocab.json" in copied
    assert not [n for n in copied if n.endswith((".safetensors", ".bin", ".pt"))], copied
    local = AutoTokenizer.from_pretrained(str(tiny_model))
    text = "收货人: 张伟 手机 13900000001 地址 浙江省杭州市西湖区文三路1号"
    assert tokenizer(text).input_ids == local(text).input_ids
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == local.apply_chat_template(messages, tokenize=False)
    load_tokenizer.cache_clear()
