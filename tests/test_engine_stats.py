"""The occupancy measure: time-weighted running sequences / max_num_seqs, idle time between
batches, scheduler stats preferred over the actor's own in-flight count; how many batches an
engine actor holds to keep max_num_seqs running."""

from __future__ import annotations

import pytest

from enrich.config import PENDING_HEADROOM, VLLM_ENGINE_MAX_NUM_SEQS, EngineConfig
from enrich.engine_stats import Occupancy


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_in_flight_count_capped_at_max_num_seqs_when_no_scheduler_stats() -> None:
    clock = Clock()
    occ = Occupancy(4, clock)
    for _ in range(6):  # 6 requests, the engine runs at most 4
        occ.submitted()
    clock.t += 10
    for _ in range(6):
        occ.finished()
    s = occ.summary()
    assert s["source"] == "in_flight"
    assert s["occupancy"] == 1.0 and s["active_seconds"] == 10 and s["idle_seconds"] == 0


def test_idle_gap_between_batches_counts_against_occupancy() -> None:
    clock = Clock()
    occ = Occupancy(2, clock)
    occ.submitted()
    occ.submitted()
    clock.t += 4
    occ.finished()
    occ.finished()
    clock.t += 4  # the engine waits for the next batch
    occ.submitted()
    occ.submitted()
    clock.t += 2
    occ.finished()
    occ.finished()
    s = occ.summary()
    assert s["idle_seconds"] == 4 and s["active_seconds"] == 10
    assert s["occupancy"] == 0.6 and s["mean_running"] == 1.2


def test_scheduler_stats_replace_the_in_flight_count() -> None:
    clock = Clock()
    occ = Occupancy(8, clock)
    for _ in range(8):
        occ.submitted()
    occ.scheduler(2)  # 8 submitted, the engine runs 2 (say, memory-bound)
    clock.t += 10
    occ.scheduler(2)
    for _ in range(8):
        occ.finished()
    s = occ.summary()
    assert s["source"] == "scheduler"
    assert s["occupancy"] == 0.25


def test_reset_forgets_the_warm_up() -> None:
    clock = Clock()
    occ = Occupancy(1, clock)
    occ.submitted()
    clock.t += 5
    occ.finished()
    occ.reset()
    clock.t += 50
    occ.submitted()
    clock.t += 1
    occ.finished()
    s = occ.summary()
    assert s["requests"] == 1 and s["idle_seconds"] == 0 and s["active_seconds"] == 1 and s["occupancy"] == 1.0


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        ({}, 5),  # vLLM's 128 sequences: ceil(140.8 / 64) + 2
        ({"max_num_seqs": 64}, 4),
        ({"max_num_seqs": 256}, 7),
        ({"max_num_seqs": 64, "batch_size": 8}, 11),
        ({"max_num_seqs": 64, "max_concurrent_batches": 2}, 2),  # pinned wins
    ],
)
def test_batches_in_flight_fill_max_num_seqs_plus_two_to_refill(engine: dict, expected: int) -> None:
    e = EngineConfig.model_validate(engine)
    assert e.batches_in_flight() == expected
    seqs = e.max_num_seqs or VLLM_ENGINE_MAX_NUM_SEQS
    if e.max_concurrent_batches is None:  # the pending set full, two batches more, and no third
        assert (expected - 2) * e.batch_size >= PENDING_HEADROOM * seqs > (expected - 3) * e.batch_size
