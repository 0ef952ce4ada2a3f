#!/usr/bin/env python
"""The new feeding measured with enrich's own code: `enrich.engine_feed.Feeder` (the async
EngineActor's feeding core, issue 14) drives an async stand-in engine with `feeding.py`'s
GPU-like step model, in virtual time.

    python bench/feeding_actor.py [--rows 20000] [--out bench/out/feeding_actor.json]

`feeding.py` models the new feeding; this runs the real one: per-row coroutines with their
retry ladder, its gate and its semaphore of ceil(1.1 × max_num_seqs) pending requests, fed by
`max_concurrent_batches` slots the way Ray Data feeds the actor (a slot takes the next batch
`gap_s` after its last one returned). The asyncio loop's clock is virtual: when every
coroutine waits, it jumps to the next timer, so the figures do not depend on this machine's
load and the run takes seconds. Needs the engine branch's modules (`enrich.engine_feed`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import selectors
import sys
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from enrich.config import EngineConfig  # noqa: E402
from feeding_engine import GPU_L4, PROFILES, Engine, Row, StepModel, ideal_time, make_rows  # noqa: E402
from flatness import STANDIN_ANSWER  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "feeding_actor.json"
VALID = json.dumps(STANDIN_ANSWER, ensure_ascii=False)  # passes the address task's checks
INVALID = "{"  # fails to parse: the row is resampled (its next attempt)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose time only moves when nothing is ready to run: a wait for I/O or a
    timer of `timeout` seconds returns at once, `timeout` later in virtual time."""

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self._virtual = 0.0
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> list[Any]:
            if timeout is None:
                raise RuntimeError("virtual clock: every coroutine waits and no timer is set (deadlock)")
            self._virtual += max(0.0, timeout)
            return real_select(0)

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._virtual


@dataclasses.dataclass
class Params:
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None

    def clone(self) -> Params:
        return dataclasses.replace(self)


class AsyncStepEngine:
    """vLLM AsyncLLM's `generate` stream over `feeding.Engine`: a step's finished requests are
    answered once its time has passed. Prompt token 0 is the row's index; an attempt's output
    is valid only at the row's last attempt, so the Feeder retries exactly `Row.attempts` times."""

    def __init__(self, rows: list[Row], step: StepModel, max_num_seqs: int, budget: int) -> None:
        self.rows, self.core = rows, Engine(step, max_num_seqs, budget)
        self.attempts = [0] * len(rows)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.core.waiting and not self.core.running():
                self.wake.clear()
                await self.wake.wait()
            start = self.core.now = loop.time()
            done = self.core._step(defer=True)
            await asyncio.sleep(self.core.now - start)
            for callback in done:
                callback()

    async def generate(self, prompt: dict[str, Any], params: Params, request_id: str, lora_request: Any = None):
        ids = prompt["prompt_token_ids"]
        row = self.rows[ids[0]]
        self.attempts[ids[0]] += 1
        attempt = self.attempts[ids[0]]
        out_len = row.out_lens[attempt - 1]
        done = asyncio.get_running_loop().create_future()
        self.core.submit(len(ids), out_len, lambda: done.set_result(None))
        self.wake.set()
        await done
        text = VALID if attempt >= row.attempts else INVALID
        completion = SimpleNamespace(text=text, finish_reason="stop", token_ids=[0] * out_len)
        yield SimpleNamespace(finished=True, outputs=[completion])


class NoLedger:
    """The run ledger's client, for a run where no engine dies: no row is suspect."""

    def call(self, name: str, *args: Any) -> Any:
        return {} if name == "levels" else None


def tables(rows: list[Row], batch_size: int) -> list[Any]:
    import pyarrow as pa

    from enrich import columns as C

    out = []
    for start in range(0, len(rows), batch_size):
        idx = range(start, min(start + batch_size, len(rows)))
        out.append(pa.table({
            C.ROW_ID: [f"r{i}" for i in idx], C.TEXT: [""] * len(idx), C.REASON: pa.array([None] * len(idx), pa.string()),
            C.MESSAGE: pa.array([None] * len(idx), pa.string()),
            C.PROMPT_TOKEN_IDS: [[i] + [1] * (rows[i].prompt_len - 1) for i in idx],
        }))  # fmt: skip
    return out


async def _run(rows: list[Row], step: StepModel, max_num_seqs: int, budget: int, batch_size: int,
               concurrent: int, gap_s: float) -> dict[str, Any]:  # fmt: skip
    from enrich.engine_feed import Feeder
    from enrich.engine_stats import Occupancy
    from enrich.tasks import build_task

    loop = asyncio.get_running_loop()
    engine = AsyncStepEngine(rows, step, max_num_seqs, budget)
    engine.task = asyncio.ensure_future(engine._loop())
    cfg = SimpleNamespace(engine=SimpleNamespace(batch_size=batch_size, max_model_len=1024),
                          sampling=SimpleNamespace(max_attempts=max(r.attempts for r in rows), retry_temperature=0.7))
    occupancy = Occupancy(max_num_seqs, clock=loop.time)
    tasks = {"address": SimpleNamespace(task=build_task("address"), params=Params(), lora=None)}
    feeder = Feeder(cfg, engine, tasks, occupancy, NoLedger(), "bench", retry_seed=lambda a: None,
                    is_dead=lambda exc: False, exit_process=sys.exit, max_pending=math.ceil(1.1 * max_num_seqs))
    from enrich import columns as C

    queue = deque(tables(rows, batch_size))
    errors = [0]

    async def slot() -> None:
        while queue:
            out = await feeder.run_batch(queue.popleft())
            errors[0] += sum(r == "engine_error" for r in out.column(C.REASON).to_pylist())
            await asyncio.sleep(gap_s)  # Ray Data hands the slot its next batch

    await asyncio.gather(*(slot() for _ in range(concurrent)))
    engine.task.cancel()
    core = engine.core
    ideal = ideal_time(rows, step, max_num_seqs)
    wrong = sum(a != r.attempts for a, r in zip(engine.attempts, rows))
    return {
        "feeding": "new (enrich.engine_feed.Feeder)", "profile": step.name, "max_num_seqs": max_num_seqs,
        "rows": len(rows), "time_s": core.now, "rows_per_s": len(rows) / core.now, "ideal_time_s": ideal,
        "of_ideal": ideal / core.now, "occupancy": core.occupancy(), "engine_idle_s": core.now - core.busy_s,
        "rows_with_wrong_attempts": wrong, "engine_errors": errors[0], "steps": core.steps,
        "feeder_occupancy": occupancy.summary() if hasattr(occupancy, "summary") else None,
    }  # fmt: skip


def run(rows: list[Row], step: StepModel, max_num_seqs: int, batch_size: int = 64, concurrent: int = 8,
        gap_s: float = 5e-3) -> dict[str, Any]:  # fmt: skip
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(_run(rows, step, max_num_seqs, max(2048, 32 * max_num_seqs), batch_size,
                                            concurrent, gap_s))  # fmt: skip
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-num-seqs", default="64,256")
    p.add_argument("--max-concurrent-batches", type=int, default=None,
                   help="batches in flight per actor (default: enrich's own, EngineConfig.batches_in_flight)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--source-note", default="", help="where enrich.engine_feed came from (recorded, e.g. a commit)")
    args = p.parse_args(argv)
    rows = make_rows(args.rows, args.seed)
    results = []
    for profile in PROFILES.values():
        for s in (int(x) for x in args.max_num_seqs.split(",")):
            concurrent = args.max_concurrent_batches or EngineConfig(batch_size=64, max_num_seqs=s).batches_in_flight()
            r = {**run(rows, profile, s, concurrent=concurrent), "max_concurrent_batches": concurrent}
            results.append(r)
            print(f"[feeding-actor] {profile.name:18s} seqs {s:3d} {r['rows_per_s']:8.1f} rows/s "
                  f"{r['of_ideal']:.3f} of ideal, occupancy {r['occupancy']:.3f}", flush=True)  # fmt: skip
    res = {"rows": args.rows, "seed": args.seed, "max_concurrent_batches": args.max_concurrent_batches or "enrich's default",
           "gap_s": 5e-3, "batch_size": 64, "target_of_ideal": 0.9, "results": results,
           "feeder_source": args.source_note or __import__("enrich.engine_feed").engine_feed.__file__}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    gpu = [r for r in results if r["profile"] == GPU_L4.name]
    print(f"[feeding-actor] wrote {args.out}; target >= 0.9 of ideal (GPU profile): "
          f"{'met' if all(r['of_ideal'] >= 0.9 for r in gpu) else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
