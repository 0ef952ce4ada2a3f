"""EngineActor on the real vLLM CPU engine (tiny checkpoint), in-process: what only a real
engine shows: a truncation retry with twice the budget, the scheduler's occupancy stats, and a
clean shutdown that leaves no engine process behind."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from enrich import columns as C
from enrich import cpu_slots
from enrich.config import VLLM_ENGINE_MAX_NUM_SEQS, JobConfig
from enrich.engine_reaper import descendants
from enrich.generate import EngineActor
from tests.fake_engine import batch

pytestmark = pytest.mark.slow


def test_real_engine_truncation_retry_occupancy_and_clean_shutdown(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The actor binds the engine to a core through the environment (cpu_slots): here, in the
    # test's own process, that binding must not outlive the test.
    monkeypatch.setenv(cpu_slots.BIND_ENV, "recorded")  # so monkeypatch undoes what the actor sets
    monkeypatch.delenv(cpu_slots.BIND_ENV)
    cfg = JobConfig.model_validate({
        "input": "in", "output": "out", "model": str(tiny_model), "task": "address",
        "engine": {"gpu_memory_utilization": 0.1, "max_model_len": 512, "batch_size": 8},
        "sampling": {"max_tokens": 2, "max_attempts": 2},  # 2 tokens cannot hold the JSON object
    })
    actor = EngineActor(cfg)
    engine_pids = [pid for pid in descendants(os.getpid()) if _cmdline(pid).startswith("VLLM::")]
    assert engine_pids, "the engine runs no child process?"

    async def two_batches() -> list:
        return list(await asyncio.gather(actor(batch(8)), actor(batch(8, start=8))))

    outs = asyncio.run(two_batches())
    for out in outs:
        assert out.column(C.ATTEMPTS).to_pylist() == [2] * 8
        assert out.column(C.FINISH_REASON).to_pylist() == ["length"] * 8
        assert out.column(C.OUTPUT_TOKENS).to_pylist() == [2 + 4] * 8  # the retry had twice the budget
    stats = actor.feeder.occupancy.summary()
    assert stats["source"] == "scheduler"  # vLLM 0.32's scheduler stats reach the actor
    assert stats["requests"] == 32 and 0 < stats["occupancy"] <= 1
    # Unpinned, the engine runs vLLM's default, which the plan's batches_in_flight assumes.
    assert stats["max_num_seqs"] == VLLM_ENGINE_MAX_NUM_SEQS

    actor.shutdown()
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in engine_pids):
        time.sleep(0.2)
    alive = [pid for pid in engine_pids if os.path.exists(f"/proc/{pid}") and "zombie" not in _state(pid)]
    assert alive == [], alive


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"
