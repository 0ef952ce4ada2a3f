"""Does a Ray Data actor's memory grow with the batches it has run, whatever its code does?

A control for the memory-flatness run, where enrich's engine actor (vLLM replaced by a
stand-in) grew steadily: a smaller pipeline of the same shape (a block source, an async actor
that returns each batch unchanged, a one-row-per-batch sink; no repartition, no writing), with
enrich's 64 KiB blocks. Batches of `--rows-per-block` rows with the columns and sizes of
enrich's prepared rows go through the identity actor `--batches-in-flight` at a time. The actor
reads its RSS and private memory (RSS - shared) at every batch; the driver samples both, and
its own, at 41 points, keeping nothing else per batch.

    python bench/actor_memory.py [--blocks 8000] [--rows-per-block 64] [--out bench/out/actor_memory.json]

The driver's growth per 1,000 actor calls, at two batch sizes, tells per-batch (per-block)
bookkeeping apart from per-row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from enrich.pipeline import BLOCK_BYTES


def prepared_block(rows: int, seed: int) -> pa.Table:
    """Columns like enrich's prepared rows: ids, text, ~90 prompt token ids, task, reason."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "_enrich_row_id": [f"s-{seed}-{i}" for i in range(rows)],
        "text": ["浙江省杭州市西湖区文三路90号 张伟 13800000000"] * rows,
        "_enrich_prompt_token_ids": [rng.integers(0, 6000, 90).tolist() for _ in range(rows)],
        "_enrich_task": ["address"] * rows,
        "_enrich_reason": pa.nulls(rows, pa.string()),
    })  # fmt: skip


class IdentityActor:
    """Async, as enrich's EngineActor is: returns each batch unchanged, plus its own memory."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.calls = 0

    async def __call__(self, table: pa.Table) -> pa.Table:
        await asyncio.sleep(0.001)
        self.calls += 1
        mem = self.proc.memory_info()
        return table.append_column("_rss", pa.array([mem.rss] * table.num_rows, pa.int64())).append_column(
            "_private", pa.array([mem.rss - mem.shared] * table.num_rows, pa.int64())
        ).append_column("_calls", pa.array([self.calls] * table.num_rows, pa.int64()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=8000)
    ap.add_argument("--rows-per-block", type=int, default=64)
    ap.add_argument("--batches-in-flight", type=int, default=4)
    ap.add_argument("--out", default="bench/out/actor_memory.json")
    args = ap.parse_args()
    import ray

    ray.init(address="local", include_dashboard=False, num_cpus=2)
    # enrich's block size (64 KiB): Ray Data would otherwise pack many batches into one block.
    ray.data.DataContext.get_current().target_max_block_size = BLOCK_BYTES
    rows = args.rows_per_block
    ds = (
        ray.data.range(args.blocks, override_num_blocks=max(1, args.blocks // 100))
        .map_batches(lambda b: prepared_block(rows, int(b["id"][0])), batch_size=1, batch_format="numpy",
                     num_cpus=0.25)
        .map_batches(IdentityActor, batch_size=rows, batch_format="pyarrow", num_cpus=0.75,
                     compute=ray.data.ActorPoolStrategy(size=1, max_concurrent_calls_per_actor=args.batches_in_flight,
                                                        max_tasks_in_flight_per_actor=args.batches_in_flight))
        .map_batches(lambda t: t.select(["_rss", "_private", "_calls"]).slice(0, 1), batch_size=rows,
                     batch_format="pyarrow", num_cpus=0.25)
    )  # fmt: skip
    import psutil

    me = psutil.Process()
    before = me.memory_info()
    started = time.time()
    # Only a fixed number of samples is kept: what the driver holds must not grow with the run,
    # or the driver's growth measures this loop (a set of every call's sample did, 2026-12-07).
    every = max(1, args.blocks // 40)
    samples, driver = [], []  # [actor calls, its RSS, its private]; [calls seen, driver private]
    last = None
    for n, r in enumerate(ds.iter_rows(), 1):  # a row per actor call
        last = (r["_calls"], r["_rss"], r["_private"])
        if n == 1 or n % every == 0:
            samples.append(list(last))
            mem = me.memory_info()
            driver.append([n, mem.rss - mem.shared])
    wall = time.time() - started
    after = me.memory_info()
    ray.shutdown()
    assert last is not None, "no batch came out"
    samples.append(list(last))
    first, last = min(samples), max(samples)
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "blocks": args.blocks, "rows_per_block": rows, "batches_in_flight": args.batches_in_flight,
        "wall_s": round(wall, 1), "cpus": os.cpu_count(),
        "first": {"calls": first[0], "rss": first[1], "private": first[2]},
        "last": {"calls": last[0], "rss": last[1], "private": last[2]},
        # The driver holds Ray Data's per-block stats until the dataset ends (ray-project/ray#66016).
        "driver_private_before_after": [before.rss - before.shared, after.rss - after.shared],
        "driver_private_growth_per_1000_calls_kib": round(
            (driver[-1][1] - driver[0][1]) / 1024 / max(1, driver[-1][0] - driver[0][0]) * 1000, 1
        ) if len(driver) >= 2 else None,
        "block_bytes": BLOCK_BYTES,
        "samples": samples,  # [actor's calls so far, its RSS, its private], in arrival order
        "driver_samples": driver,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
