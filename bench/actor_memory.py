"""Does a Ray Data actor's memory grow with the batches it has run, whatever its code does?

A control for the memory-flatness run, where enrich's engine actor (vLLM replaced by a
stand-in) grew steadily: the same pipeline shape with an async actor that returns each batch
unchanged. Blocks of `--rows-per-block` rows (enrich's engine batch, 64) with the columns and
sizes of enrich's prepared rows go through the identity actor `--batches-in-flight` at a time;
the actor's RSS and private memory (RSS - shared) are read from inside it at every batch, and
the driver's before and after the run. If this actor grows like enrich's, the growth is Ray's, not enrich's.

    python bench/actor_memory.py [--blocks 8000] [--rows-per-block 64] [--out bench/out/actor_memory.json]

Driver growth per block (the slope between its first and last sample) is what tells per-block
bookkeeping apart from per-row: run it at two block sizes.
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
    seen, driver = set(), []  # driver: [batches done, driver private bytes]
    for n, r in enumerate(ds.iter_rows(), 1):  # a row per actor call
        seen.add((r["_calls"], r["_rss"], r["_private"]))
        if n % 500 == 0:
            mem = me.memory_info()
            driver.append([n, mem.rss - mem.shared])
    samples = sorted(seen)
    wall = time.time() - started
    after = me.memory_info()
    ray.shutdown()
    step = max(1, len(samples) // 40)
    first, last = samples[0], samples[-1]
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "blocks": args.blocks, "rows_per_block": rows, "batches_in_flight": args.batches_in_flight,
        "wall_s": round(wall, 1), "cpus": os.cpu_count(),
        "first": {"calls": first[0], "rss": first[1], "private": first[2]},
        "last": {"calls": last[0], "rss": last[1], "private": last[2]},
        # The driver holds Ray Data's per-block stats until the dataset ends (ray-project/ray#66016).
        "driver_private_before_after": [before.rss - before.shared, after.rss - after.shared],
        "driver_private_growth_per_1000_blocks_kib": round(
            (driver[-1][1] - driver[0][1]) / 1024 / max(1, driver[-1][0] - driver[0][0]) * 1000, 1
        ) if len(driver) >= 2 else None,
        "samples": [list(s) for s in samples[::step]],  # [actor's calls so far, its RSS, its private]
        "driver_samples": driver[:: max(1, len(driver) // 40)],
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    main()
