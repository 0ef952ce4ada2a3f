"""EngineActor with a fake async engine (fast, no vLLM, no Ray): the row ladder, row isolation,
warm-up refusal, the dead-engine exit, concurrent batches, the poison row and the budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.engine_ledger import CONVICTED, KILLED, EngineBudgetSpent, Ledger
from enrich.generate import EngineActor, EngineStartError
from tests.fake_engine import POISON, FakeBackend, FakeEngine, answer, batch


class Exited(BaseException):
    """Stands in for os._exit in-process."""


class Actor(EngineActor):
    @staticmethod
    def exit_process(code: int) -> None:
        raise Exited(code)


def config(batch_size: int = 8, **sampling: Any) -> JobConfig:
    return JobConfig.model_validate({
        "input": "in", "output": "out", "model": "m", "task": "classify",
        "task_options": {"labels": "a,b"}, "engine": {"batch_size": batch_size, "max_concurrent_batches": 4},
        "sampling": {"max_tokens": 16, **sampling},
    })


def run(actor: EngineActor, *tables: pa.Table) -> list[pa.Table]:
    async def go() -> list[pa.Table]:
        return list(await asyncio.gather(*(actor(t) for t in tables)))

    return asyncio.run(go())


def make(engine: FakeEngine, cfg: JobConfig | None = None, ledger: Ledger | None = None, **kw: Any) -> Actor:
    return Actor(cfg or config(), ledger=ledger, backend=FakeBackend(engine, **kw))


def col(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


def test_one_failing_row_is_an_engine_error_and_its_batch_completes() -> None:
    def script(prompt: list[int], params: Any, lora: Any) -> tuple[str, str, int]:
        if prompt[0] == 3:
            raise ValueError("bad request")
        return "a", "stop", 1

    (out,) = run(make(FakeEngine(script)), batch(6))
    assert col(out, C.REASON) == [None, None, "engine_error", None, None, None]
    assert col(out, C.MESSAGE)[2] == "ValueError: bad request"
    assert col(out, C.RAW_OUTPUT) == ["a", "a", None, "a", "a", "a"]
    assert col(out, C.ATTEMPTS) == [1, 1, 1, 1, 1, 1]


def test_truncated_output_is_retried_with_twice_the_budget() -> None:
    engine = FakeEngine(lambda p, params, lora: ("a", "length", 16) if params.max_tokens == 16 else ("b", "stop", 3))
    (out,) = run(make(engine), batch(2))
    assert col(out, C.RAW_OUTPUT) == ["b", "b"]
    assert col(out, C.ATTEMPTS) == [2, 2]
    assert col(out, C.OUTPUT_TOKENS) == [19, 19]  # both attempts: the work the row cost
    budgets = sorted(params.max_tokens for _, params, _, _ in engine.calls if _ != "warm-up")
    assert budgets[-2:] == [32, 32]
    assert len({rid for *_, rid in engine.calls}) == len(engine.calls)  # a new request id per attempt


def test_invalid_output_is_resampled_at_the_retry_temperature() -> None:
    engine = FakeEngine(lambda p, params, lora: ("zzz", "stop", 1) if params.temperature == 0 else ("a", "stop", 1))
    (out,) = run(make(engine, config(retry_temperature=0.9)), batch(3))
    assert col(out, C.RAW_OUTPUT) == ["a", "a", "a"]
    assert col(out, C.ATTEMPTS) == [2, 2, 2]
    retries = [params for _, params, _, _ in engine.calls if params.temperature > 0]
    assert [(p.temperature, p.seed, p.max_tokens) for p in retries] == [(0.9, 1001, 16)] * 3


def test_last_attempt_is_kept_for_the_validator_when_every_attempt_fails() -> None:
    (out,) = run(make(FakeEngine(answer("zzz")), config(max_attempts=3)), batch(2))
    assert col(out, C.RAW_OUTPUT) == ["zzz", "zzz"]
    assert col(out, C.ATTEMPTS) == [3, 3]
    assert col(out, C.REASON) == [None, None]  # the validate stage rejects it


def test_warm_up_refuses_a_constraint_the_backend_rejects() -> None:
    with pytest.raises(RuntimeError) as failure:
        make(FakeEngine(answer("a")), fail_warm_up=True)
    assert str(failure.value) == (
        "task 'classify': engine cannot decode with its constraint: ValueError: grammar rejected by the backend"
    )


def test_rows_with_a_reason_pass_through_untouched() -> None:
    engine = FakeEngine(answer("a"))
    (out,) = run(make(engine), batch(4, reasons={1: "too_long", 3: "bad_input"}))
    assert col(out, C.REASON) == [None, "too_long", None, "bad_input"]
    assert col(out, C.ATTEMPTS) == [1, 0, 1, 0]
    assert col(out, C.RAW_OUTPUT) == ["a", None, "a", None]
    sent = sorted(ids[0] for ids, *_ in engine.calls if ids != [0])
    assert sent == [1, 3]


def test_concurrent_batches_keep_row_order_and_one_result_per_row() -> None:
    engine = FakeEngine(lambda p, params, lora: (str(p[0]), "stop", 1))
    tables = [batch(8, start=8 * b) for b in range(6)]
    outs = run(make(engine, config(max_attempts=1)), *tables)
    for table, out in zip(tables, outs):
        assert col(out, C.ROW_ID) == col(table, C.ROW_ID)
        assert col(out, C.RAW_OUTPUT) == [str(ids[0]) for ids in col(table, C.PROMPT_TOKEN_IDS)]
        assert col(out, C.ATTEMPTS) == [1] * 8
    assert engine.max_running > 8  # several batches were in the engine at once


def test_each_task_decodes_with_its_own_adapter() -> None:
    cfg = JobConfig.model_validate({
        "input": "in", "output": "out", "model": "m", "task_options": {"labels": "a,b"},
        "tasks": [{"task": "classify", "name": "one", "adapter": "/ad/one"}, {"task": "classify", "name": "two"}],
    })
    engine = FakeEngine(lambda p, params, lora: ("a" if lora else "b", "stop", 1))
    (out,) = run(make(engine, cfg), batch(4, labels=["one", "two", "two", "one"]))
    assert col(out, C.RAW_OUTPUT) == ["a", "b", "b", "a"]
    assert {(ids[0], lora) for ids, _, lora, _ in engine.calls if ids != [0]} == {
        (1, "lora-1"), (2, None), (3, None), (4, "lora-1")}


def test_dead_engine_reports_its_rows_and_exits_the_process() -> None:
    ledger = Ledger(deaths_per_hour=5)
    with pytest.raises(Exited):
        run(make(FakeEngine(answer("a")), ledger=ledger), batch(4, poison={2}))
    assert len(ledger.deaths) == 1 and "EngineDeadError: EngineCore died" in ledger.deaths[0][2]
    assert set(ledger.in_flight_deaths) >= {"classify/r2"}


def test_poison_row_is_isolated_and_the_rest_completes() -> None:
    ledger = Ledger(deaths_per_hour=10)
    table = batch(8, poison={5})
    deaths = 0
    while True:  # each loop is a restarted actor re-running the batch (Ray does this)
        try:
            (out,) = run(make(FakeEngine(answer("a")), ledger=ledger), table)
            break
        except Exited:
            deaths += 1
            assert deaths < 6, "the poison row was not isolated"
    assert deaths == 3  # all 8 in flight; a chunk of 2; the row alone
    assert col(out, C.REASON) == [None] * 5 + ["engine_error"] + [None] * 2
    assert col(out, C.MESSAGE)[5].startswith("poison row")
    assert col(out, C.RAW_OUTPUT)[:5] == ["a"] * 5
    assert ledger.levels(["classify/r5"]) == {"classify/r5": CONVICTED}
    assert ledger.summary()["poison_rows"] == ["classify/r5"]


def test_spent_death_budget_fails_the_batch_with_the_cause() -> None:
    ledger = Ledger(deaths_per_hour=1)
    with pytest.raises(Exited):
        run(make(FakeEngine(answer("a")), ledger=ledger), batch(2, poison={0}))
    with pytest.raises(EngineBudgetSpent) as failure:
        run(make(FakeEngine(answer("a")), ledger=ledger), batch(2, poison={0}))
    assert str(failure.value) == (
        "engine error budget spent: 2 engine deaths in the last hour exceed the budget "
        "(max_engine_deaths_per_hour=1); last cause: EngineDeadError: EngineCore died"
    )
    with pytest.raises(EngineBudgetSpent):  # and no engine starts again
        make(FakeEngine(answer("a")), ledger=ledger)


def test_start_failure_fails_setup_with_the_cause_and_is_recorded() -> None:
    class Broken(FakeBackend):
        def start(self, cfg: Any, occupancy: Any) -> Any:
            raise OSError("weights unreadable")

    ledger = Ledger(deaths_per_hour=10)
    with pytest.raises(EngineStartError) as failure:  # Ray Data replaces the actor, within budget
        Actor(config(), ledger=ledger, backend=Broken(FakeEngine(answer("a"))))
    assert str(failure.value) == "engine failed to start: OSError: weights unreadable"
    assert ledger.summary()["start_failures"] == 1
    assert ledger.summary()["start_failure_causes"] == ["OSError: weights unreadable"]


def test_a_killed_engine_counts_as_a_death_at_its_restart() -> None:
    ledger = Ledger(deaths_per_hour=10)
    assert ledger.admit_start("e1") is None
    ledger.ready("e1")
    assert ledger.admit_start("e1") is None  # restarted without having reported a death
    assert [cause for _, _, cause in ledger.deaths] == [KILLED]
    assert ledger.summary()["restarts"] == 1


def test_occupancy_is_reported_per_engine() -> None:
    ledger = Ledger(deaths_per_hour=10)
    actor = make(FakeEngine(answer("a")), ledger=ledger, max_num_seqs=16)
    run(actor, *(batch(8, start=8 * b) for b in range(4)))
    stats = ledger.summary()["engines"][f"{actor.engine_id}#1"]
    assert stats["source"] == "in_flight" and stats["max_num_seqs"] == 16
    assert stats["requests"] == 32  # the warm-up is not counted
    assert 0.5 < stats["occupancy"] <= 1.0
    actor.shutdown()
    assert actor.feeder is None


def test_dropping_the_actor_shuts_its_engine_down_without_the_garbage_collector() -> None:
    """Ray Data's graceful pool shutdown drops the UDF and relies on __del__: no reference cycle
    may keep the actor alive, or its engine is killed with the process instead of shut down."""
    import gc

    engine = FakeEngine(lambda prompt, params, lora: ("a", "stop", 1))
    actor = make(engine)
    run(actor, batch(2))
    gc.disable()
    try:
        del actor
        assert engine.shut_down
    finally:
        gc.enable()


def test_shutdown_cancels_the_output_handler_first_and_tells_the_ledger() -> None:
    """vLLM's own shutdown stops the core while its output handler still waits on it (an
    EngineDeadError traceback at every run's end): the handler goes first. The ledger hears the
    engine stopped, which the driver waits for before it ends the run."""
    ledger = Ledger(deaths_per_hour=10)
    engine = FakeEngine(answer("a"))
    actor = make(engine, ledger=ledger)
    assert ledger.live_engines() == 1
    order: list[str] = []

    async def handler() -> None:  # stands in for AsyncLLM's output handler task
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            order.append("handler cancelled")
            raise

    async def start_handler() -> asyncio.Task:
        return asyncio.get_running_loop().create_task(handler())

    engine.output_handler = asyncio.run_coroutine_threadsafe(start_handler(), actor.loop).result()
    shutdown = engine.shutdown
    engine.shutdown = lambda: (order.append("engine shutdown"), shutdown())  # type: ignore[method-assign]
    actor.shutdown()
    assert order == ["handler cancelled", "engine shutdown"] and engine.shut_down
    assert ledger.live_engines() == 0


def test_the_ledger_counts_live_engines() -> None:
    ledger = Ledger(deaths_per_hour=10)
    for engine in ("e1", "e2"):
        ledger.admit_start(engine)
        ledger.ready(engine)
    assert ledger.live_engines() == 2
    ledger.engine_died("e1", "EngineDeadError", [])  # a dead engine never reports its stop
    ledger.stopped("e2")
    assert ledger.live_engines() == 0
