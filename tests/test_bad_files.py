"""--on-bad-file skip and --on-too-long truncate (fast: no engine)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from enrich import columns as C
from enrich.commit import OutputCommitter
from enrich.config import JobConfig
from enrich.prepare import prepare_batch
from enrich.read import BAD_FILE, InputError, discover_shards, read_shard
from enrich.write import Lineage
from tests.commit_fixtures import deliver

LINEAGE = Lineage("m", None, None, "address", "2", "fp")


def cfg_for(tmp_path: Path, **extra: object) -> JobConfig:
    return JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": "unused", **extra}
    )


def test_bad_parquet_fails_by_default_and_is_skipped_on_request(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    shard = discover_shards(cfg_for(tmp_path))[0]
    with pytest.raises(InputError, match="broken.parquet"):
        list(read_shard(shard, cfg_for(tmp_path)))
    chunks = list(read_shard(shard, cfg_for(tmp_path, on_bad_file="skip")))
    assert len(chunks) == 1 and chunks[0].num_rows == 1
    assert chunks[0].column(C.REASON).to_pylist() == [BAD_FILE]
    assert "broken.parquet" in chunks[0].column(C.MESSAGE)[0].as_py()


def test_committer_drops_a_skipped_file_and_lists_it(tmp_path: Path) -> None:
    """Rows read before the problem showed up are dropped with the file; no manifest is
    written (a rerun retries it) and the good shard commits normally."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"other": [1, 2]}), tmp_path / "in" / "a.parquet")  # no text column
    pq.write_table(pa.table({"text": ["x", "y"]}), tmp_path / "in" / "b.parquet")
    cfg = cfg_for(tmp_path, on_bad_file="skip")
    shards = discover_shards(cfg)
    committer = OutputCommitter(cfg, LINEAGE, ["province"])
    committer.plan(shards)
    for shard in shards:
        for n, chunk in enumerate(read_shard(shard, cfg)):
            deliver(committer, _finished(chunk), f"w{n}")
    committer.finish()
    assert list(committer.bad_files) == [shards[0].url]
    assert "no column 'text'" in committer.bad_files[shards[0].url]
    assert [m.source for m in committer.committed] == [shards[1].url]
    assert not (tmp_path / "out" / "_manifests" / f"{shards[0].shard_id}.json").exists()


def _finished(chunk: pa.Table) -> pa.Table:
    """A read chunk as it leaves validate: generation columns and a null output column."""
    n = chunk.num_rows
    for name, kind in [(C.PROMPT_TOKEN_IDS, pa.list_(pa.int32())), (C.PROMPT_TOKENS, pa.int32()),
                       (C.RAW_OUTPUT, pa.string()), (C.FINISH_REASON, pa.string()),
                       (C.OUTPUT_TOKENS, pa.int32()), (C.ATTEMPTS, pa.int32()), ("province", pa.string())]:
        chunk = chunk.append_column(name, pa.nulls(n, kind))
    reasons = [r or "domain_check" for r in chunk.column(C.REASON).to_pylist()]
    return C.replace(chunk, C.REASON, pa.array(reasons, pa.string()))


def test_too_long_rejected_or_truncated(tmp_path: Path, tiny_model: Path) -> None:
    long_text = "浙江省杭州市西湖区文三路" * 200
    table = pa.table({
        C.TEXT: pa.array([long_text, "天津市河西区珠江道21号"], pa.string()),
        C.REASON: pa.nulls(2, pa.string()),
        C.MESSAGE: pa.nulls(2, pa.string()),
    })
    base = {"model": str(tiny_model), "engine": {"max_model_len": 512}, "sampling": {"max_tokens": 128}}
    rejected = prepare_batch(table, cfg_for(tmp_path, **base))
    assert rejected.column(C.REASON).to_pylist() == ["too_long", None]
    assert "budget is 384" in rejected.column(C.MESSAGE)[0].as_py()
    cut = prepare_batch(table, cfg_for(tmp_path, **base, on_too_long="truncate"))
    assert cut.column(C.REASON).to_pylist() == [None, None]
    assert 300 < cut.column(C.PROMPT_TOKENS)[0].as_py() <= 384


def test_rejects_feed_back_as_input(tmp_path: Path) -> None:
    """A rejects file is a valid input shard: --text-column input_text --id-column row_id."""
    from enrich.write import reject_rows

    table = pa.table({
        "order_id": pa.array(["A1", "A2"], pa.string()),
        C.ROW_ID: pa.array(["A1", "A2"], pa.string()),
        C.SOURCE_FILE: pa.array(["/in/a.jsonl"] * 2, pa.string()),
        C.ROW_INDEX: pa.array([0, 1], pa.int64()),
        C.TEXT: pa.array(["天津市河西区珠江道21号", "浙江省杭州市西湖区"], pa.string()),
        C.REASON: pa.array(["truncated", "domain_check"], pa.string()),
        C.MESSAGE: pa.array(["m1", "m2"], pa.string()),
        C.RAW_OUTPUT: pa.array(["{", "{}"], pa.string()),
        C.ATTEMPTS: pa.array([2, 2], pa.int32()),
        C.PROMPT_TOKENS: pa.array([40, 41], pa.int32()),
        C.OUTPUT_TOKENS: pa.array([512, 60], pa.int32()),
    })
    (tmp_path / "in").mkdir()
    pq.write_table(reject_rows(table, LINEAGE, ["province"]), tmp_path / "in" / "rejects.parquet")
    cfg = cfg_for(tmp_path, text_column="input_text", id_column="row_id")
    chunks = list(read_shard(discover_shards(cfg)[0], cfg))
    assert chunks[0].column(C.ROW_ID).to_pylist() == ["A1", "A2"]
    assert chunks[0].column(C.TEXT).to_pylist() == ["天津市河西区珠江道21号", "浙江省杭州市西湖区"]
    assert chunks[0].column(C.REASON).to_pylist() == [None, None]
