"""The engine stage inside real Ray Data actors, with the fake async engine (no vLLM): a dead
engine exits its actor, Ray restarts it and the batch completes; a poison row is isolated;
blocks carry batch_size rows without a stage of their own; an engine that starts late still
gets rows."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.engine_ledger import engine_report
from enrich.engine_stage import add_engine_stage, rows_per_block
from tests.fake_engine import BrokenBackend, FakeBackend, FakeEngine, answer, batch

pytestmark = pytest.mark.slow


class LateSecondBackend(FakeBackend):
    """The first engine to start is up at once; every other one takes `delay` seconds."""

    def __init__(self, engine: FakeEngine, marker: str, delay: float, max_num_seqs: int) -> None:
        super().__init__(engine, max_num_seqs=max_num_seqs)
        self.marker, self.delay = marker, delay

    def start(self, cfg: Any, occupancy: Any) -> tuple[FakeEngine, int]:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(self.delay)
        return super().start(cfg, occupancy)


@pytest.fixture
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def config(**engine: object) -> JobConfig:
    return JobConfig.model_validate({
        "input": "in", "output": "out", "model": "m", "task": "classify", "task_options": {"labels": "a,b"},
        "engine": {"batch_size": 8, "max_concurrent_batches": 4, "cpus_per_engine": 0.5, **engine},
        "sampling": {"max_tokens": 16},
    })


def run_stage(cfg: JobConfig, backend: FakeBackend, tables: list[pa.Table]) -> pa.Table:
    import ray

    # The source first, as in the pipeline: the dataset's context is copied from the current one here.
    source = ray.data.from_arrow(tables)
    ds = add_engine_stage(source, cfg, {"num_cpus": cfg.engine.cpus_per_engine}, backend=backend)
    return pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))


def test_dead_engine_restarts_its_actor_and_the_batch_completes(ray_cluster: None, tmp_path: Path) -> None:
    marker = tmp_path / "die-once"
    marker.touch()
    tables = [batch(8, start=8 * b, poison={13}) for b in range(4)]
    out = run_stage(config(), FakeBackend(FakeEngine(answer("a"), marker=str(marker))), tables)
    assert not marker.exists(), "the engine never died"
    assert sorted(out.column(C.ROW_ID).to_pylist()) == sorted(f"r{i}" for i in range(32))
    assert out.column(C.REASON).to_pylist() == [None] * 32
    report = engine_report()
    assert report is not None
    assert report["engine_deaths"] == 1 and report["restarts"] == 1
    assert report["death_causes"] == ["EngineDeadError: EngineCore died"]


def test_poison_row_becomes_an_engine_error_and_the_rest_completes(ray_cluster: None) -> None:
    tables = [batch(8, start=8 * b, poison={10}) for b in range(3)]
    out = run_stage(config(), FakeBackend(FakeEngine(answer("a"))), tables)
    rows = dict(zip(out.column(C.ROW_ID).to_pylist(), out.column(C.REASON).to_pylist()))
    assert len(rows) == out.num_rows == 24
    assert rows.pop("r10") == "engine_error"
    assert set(rows.values()) == {None}
    report = engine_report()
    assert report is not None
    assert report["poison_rows"] == ["classify/r10"]
    assert report["engine_deaths"] == 3 < config().engine.max_engine_deaths_per_hour


def test_death_budget_spent_fails_the_run_naming_the_cause(ray_cluster: None) -> None:
    tables = [batch(8, poison={3})]
    with pytest.raises(Exception) as failure:
        run_stage(config(max_engine_deaths_per_hour=1), FakeBackend(FakeEngine(answer("a"))), tables)
    assert (
        "engine error budget spent: 2 engine deaths in the last hour exceed the budget "
        "(max_engine_deaths_per_hour=1); last cause: EngineDeadError: EngineCore died"
    ) in str(failure.value)


def test_engine_that_cannot_start_is_replaced_then_fails_the_run(ray_cluster: None) -> None:
    with pytest.raises(Exception) as failure:
        run_stage(config(max_start_failures=2), BrokenBackend(FakeEngine(answer("a"))), [batch(4)])
    assert "engine failed to start: OSError: weights unreadable" in str(failure.value)
    report = engine_report()
    assert report is not None and report["start_failures"] == 2


def test_blocks_hold_batch_size_rows_in_the_stage_before(ray_cluster: None) -> None:
    import ray

    def prepare(t: pa.Table) -> pa.Table:
        return t.append_column("x", pa.array([1] * t.num_rows))

    def sizes(t: pa.Table) -> pa.Table:
        return pa.table({"n": [t.num_rows]})

    args = {"num_cpus": 0.25, "memory": 1 << 28}
    prepared = ray.data.range(1000, override_num_blocks=4).map_batches(prepare, batch_format="pyarrow", **args)
    ds = rows_per_block(prepared, 64, args).map_batches(sizes, batch_format="pyarrow", batch_size=None, num_cpus=0.1)
    counts = sorted(n for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) for n in b.column("n").to_pylist())
    assert sum(counts) == 1000
    assert counts.count(64) == 12  # each 250-row input block: 3 x 64 + one of 58
    assert counts[:4] == [58] * 4
    stats = ds.stats()
    assert "prepare)->StreamingRepartition" in stats, stats  # fused: no stage of its own


def test_an_engine_that_starts_late_still_gets_rows(ray_cluster: None, tmp_path: Path) -> None:
    # 7 blocks, as a 400-row input makes at 64 rows per batch. The first engine up may hold only
    # what keeps its running set full (4 batches here), not all 7 (Ray Data's default queue at
    # the actor took them all while the second engine started: bench, 2026-12-06).
    cfg = config(num_engines=2, max_concurrent_batches=None, max_num_seqs=8)
    assert cfg.engine.batches_in_flight() == 4
    backend = LateSecondBackend(FakeEngine(answer("a"), delay=1.0), str(tmp_path / "first"), delay=3.0, max_num_seqs=8)
    out = run_stage(cfg, backend, [batch(8, start=8 * b) for b in range(7)])
    assert sorted(out.column(C.ROW_ID).to_pylist()) == sorted(f"r{i}" for i in range(56))
    report = engine_report()
    assert report is not None
    requests = sorted(s["requests"] for s in report["engines"].values())
    assert len(requests) == 2 and sum(requests) == 56 and requests[0] >= 8, requests
