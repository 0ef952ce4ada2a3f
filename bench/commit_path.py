"""The driver's commit path, before (rows through the driver, main's OutputCommitter) and after
(descriptors through the driver, workers write): throughput, object-store requests per
committed shard, and driver memory, on local disk and on a moto S3 server.

    PYTHONPATH=src python bench/commit_path.py [--out bench/commit_path_results.json]

"Before" is main's commit.py + write.py at the commit named in the JSON, loaded as a separate
package; it is fed 64-row blocks (what 64 KiB blocks of address rows hold) with the working
columns the driver really receives. "After" feeds Descriptor JSON (what the write stage
returns), parsed in the timed loop as the driver parses it. Requests are counted by a
pass-through proxy (tests/faulty_s3.py with no faults) in front of moto.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import pyarrow as pa  # noqa: E402

from enrich import columns as C  # noqa: E402
from enrich.config import JobConfig  # noqa: E402
from enrich.read import ShardInfo  # noqa: E402
from enrich.write import Descriptor, Lineage, WrittenFile  # noqa: E402
from tests.helpers import ADDRESS_FIELDS, stage_columns, synthetic_addresses  # noqa: E402

LINEAGE = Lineage("m", None, None, "address", "1", "fp")
BLOCK = 64  # rows per block reaching the old driver


def old_package(ref: str = "main") -> types.ModuleType:
    """main's commit.py and write.py as package `oldenrich` (the rest shared with enrich)."""
    folder = Path(tempfile.mkdtemp()) / "oldenrich"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in ("commit", "write"):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:src/enrich/{name}.py"],
                             capture_output=True, text=True, check=True).stdout
        (folder / f"{name}.py").write_text(src.replace("from enrich.write import", "from oldenrich.write import"))
    sys.path.insert(0, str(folder.parent))
    import oldenrich.commit

    return oldenrich.commit


def cfg(output: str, endpoint: str | None) -> JobConfig:
    return JobConfig.model_validate({"input": "/in", "output": output, "model": "m", "s3_endpoint": endpoint})


def shards(n: int) -> list[ShardInfo]:
    return [ShardInfo(f"/in/part-{i:05d}.jsonl", "jsonl", 10_000, "v1") for i in range(n)]


def old_blocks(shard: ShardInfo, rows: int) -> list[pa.Table]:
    """Finished rows as the old driver received them (working columns, prompt ids included)."""
    texts = synthetic_addresses(rows)
    out = []
    for start in range(0, rows, BLOCK):
        idx = list(range(start, min(start + BLOCK, rows)))
        n = len(idx)
        table = pa.table({
            "text": pa.array([texts[i] for i in idx]),
            C.ROW_ID: pa.array([f"{shard.shard_id}-{i}" for i in idx]),
            C.SOURCE_FILE: pa.array([shard.url] * n),
            C.ROW_INDEX: pa.array(idx, pa.int64()),
            C.SHARD_ROWS: pa.array([rows if idx[-1] == rows - 1 else -1] * n, pa.int64()),
            C.TEXT: pa.array([texts[i] for i in idx]),
            C.REASON: pa.array([None] * n, pa.string()),
            C.MESSAGE: pa.array([None] * n, pa.string()),
            C.TASK: pa.array(["address"] * n),
            **stage_columns(idx, [False] * n),
        })
        ids = pa.array([list(range(60))] * n, pa.list_(pa.int32()))  # ~60 prompt tokens per row
        out.append(C.replace(table, C.PROMPT_TOKEN_IDS, ids))
    return out


def new_descriptors(shard: ShardInfo, rows: int, per: int) -> list[str]:
    out = []
    for k, start in enumerate(range(0, rows, per)):
        end = min(start + per, rows)
        name = f"part-{shard.shard_id}-run1-{uuid.uuid4().hex[:12]}.parquet"
        d = Descriptor(task="address", shard_id=shard.shard_id, source=shard.url, attempt=f"run1-{k}",
                       ranges=[(start, end)], files=[WrittenFile(path=name, rows=end - start, bytes=1 << 20)],
                       shard_rows=rows if end == rows else -1)
        d.quality.rows_ok = end - start
        d.quality.rows_by_attempts = {"1": end - start}
        d.quality.output_tokens = {str(t): (end - start) // 4 for t in (40, 50, 60, 70)}
        out.append(d.model_dump_json())
    return out


def count_requests(endpoint: str | None, work: Any) -> tuple[Any, int]:
    """Run work(endpoint') through a counting proxy (S3) or directly (local)."""
    if endpoint is None:
        return work(None), 0
    from tests.faulty_s3 import FaultyS3Proxy

    with FaultyS3Proxy(endpoint) as proxy:
        result = work(proxy.url)
        return result, proxy.requests


def run_before(old: Any, output: str, endpoint: str | None, n_shards: int, rows: int) -> dict[str, Any]:
    todo = shards(n_shards)
    blocks = [b for s in todo for b in old_blocks(s, rows)]
    bytes_in = sum(b.nbytes for b in blocks)

    def work(ep: str | None) -> dict[str, Any]:
        from enrich import storage

        storage._filesystem.cache_clear()
        oc = old.OutputCommitter(cfg(output, ep), LINEAGE, list(ADDRESS_FIELDS))
        oc.plan(todo)
        start = time.perf_counter()
        for block in blocks:
            oc.add(block)
        oc.finish()
        return {"seconds": time.perf_counter() - start, "committed": len(oc.committed)}

    out, requests = count_requests(endpoint, work)
    rows_total = n_shards * rows
    return {"shards": n_shards, "rows": rows_total, "blocks": len(blocks), "seconds": round(out["seconds"], 3),
            "rows_per_s": round(rows_total / out["seconds"]), "requests": requests,
            "requests_per_shard": round(requests / n_shards, 1) if endpoint else None,
            "bytes_to_driver": bytes_in, "bytes_per_row": round(bytes_in / rows_total)}


def run_after(output: str, endpoint: str | None, n_shards: int, rows: int, per: int) -> dict[str, Any]:
    from enrich.commit import OutputCommitter
    from enrich.sink import DESCRIPTOR, descriptors

    todo = shards(n_shards)
    texts = [d for s in todo for d in new_descriptors(s, rows, per)]
    batches = [pa.table({DESCRIPTOR: pa.array(texts[i : i + 8])}) for i in range(0, len(texts), 8)]

    def work(ep: str | None) -> dict[str, Any]:
        from enrich import storage

        storage._filesystem.cache_clear()
        oc = OutputCommitter(cfg(output, ep), LINEAGE, list(ADDRESS_FIELDS))
        t0 = time.perf_counter()
        oc.plan(todo)
        t1 = time.perf_counter()
        for batch in batches:
            for d in descriptors(batch):
                oc.add(d)
        t2 = time.perf_counter()
        oc.finish()
        oc.mark_success()
        return {"plan": t1 - t0, "stream": t2 - t1, "finish": time.perf_counter() - t2, "committed": len(oc.committed)}

    out, requests = count_requests(endpoint, work)
    rows_total = n_shards * rows
    return {"shards": n_shards, "rows_equivalent": rows_total, "descriptors": len(texts),
            "rows_per_descriptor": per, "stream_seconds": round(out["stream"], 3),
            "plan_seconds": round(out["plan"], 3), "finish_seconds": round(out["finish"], 3),
            "descriptors_per_s": round(len(texts) / out["stream"]),
            "rows_equivalent_per_s": round(rows_total / out["stream"]), "requests": requests,
            "requests_per_shard": round(requests / n_shards, 2) if endpoint else None,
            "bytes_to_driver": sum(len(t) for t in texts),
            "bytes_per_row": round(sum(len(t) for t in texts) / rows_total, 4)}


def driver_memory(rows_per_descriptor: int, n_shards: int = 200) -> int:
    """Peak Python allocation of the after path for the same descriptors, whatever the rows."""
    from enrich.commit import OutputCommitter
    from enrich.write import Descriptor as D

    todo = shards(n_shards)
    texts = [d for s in todo for d in new_descriptors(s, 10 * rows_per_descriptor, rows_per_descriptor)]
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        tracemalloc.start()
        oc = OutputCommitter(cfg(f"{tmp}/out", None), LINEAGE, list(ADDRESS_FIELDS))
        oc.plan(todo)
        for t in texts:
            oc.add(D.model_validate_json(t))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(REPO / "bench" / "commit_path_results.json"))
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    from tests.conftest import free_port

    old = old_package()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import s3fs

    direct = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    results: dict[str, Any] = {"main_commit": subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "main"], capture_output=True, text=True).stdout.strip()}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results["before_local"] = run_before(old, f"{tmp}/before", None, 20, 2_000)
            results["after_local"] = run_after(f"{tmp}/after", None, 2_000, 10_000, 1_000)
        for name in ("bench-before", "bench-after"):
            direct.mkdir(name)
        results["before_s3"] = run_before(old, "s3://bench-before/out", endpoint, 10, 500)
        results["after_s3"] = run_after("s3://bench-after/out", endpoint, 100, 10_000, 1_000)
    finally:
        server.stop()
    results["driver_peak_bytes"] = {f"{r} rows/descriptor": driver_memory(r) for r in (1_000, 100_000)}
    after = results["after_local"]["rows_equivalent_per_s"]
    results["engines_at_500_rows_per_s"] = after // 500
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
