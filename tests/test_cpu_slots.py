"""CPU engines claim their own cores (flock'ed slot files); no engine starts here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enrich import cpu_slots


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


def test_each_claim_gets_its_own_cores_until_none_are_left(tmp_path: Path, four_cores: None) -> None:
    a = cpu_slots.claim_cpu_slot(2, str(tmp_path))
    b = cpu_slots.claim_cpu_slot(2, str(tmp_path))
    assert a is not None and b is not None
    assert (a[0], b[0]) == ([0, 1], [2, 3])
    assert cpu_slots.claim_cpu_slot(2, str(tmp_path)) is None
    os.close(a[1])  # the actor died: the kernel drops its lock, the slot is free again
    again = cpu_slots.claim_cpu_slot(2, str(tmp_path))
    assert again is not None and again[0] == [0, 1]
    os.close(b[1])
    os.close(again[1])


def test_binding_is_set_for_vllm_unless_the_operator_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    # A private environment: a binding leaked into this process would reach every Ray worker
    # and engine started later in the session (a bind to cores 2,3 on a 2-core runner kills them).
    env: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", env)
    monkeypatch.setattr(cpu_slots, "claim_cpu_slot", lambda cores: ([2, 3][:cores], os.open(os.devnull, os.O_RDONLY)))
    fd = cpu_slots.bind_engine_to_own_cores(2)
    assert fd is not None and env == {cpu_slots.BIND_ENV: "2,3"}
    os.close(fd)
    env[cpu_slots.BIND_ENV] = "0-1"  # the operator's binding wins
    assert cpu_slots.bind_engine_to_own_cores(1) is None and env == {cpu_slots.BIND_ENV: "0-1"}
    env.clear()
    monkeypatch.setattr(cpu_slots, "claim_cpu_slot", lambda cores: None)  # every slot taken
    assert cpu_slots.bind_engine_to_own_cores(1) is None and env == {}


def test_the_binding_tests_leave_the_environment_alone() -> None:
    assert cpu_slots.BIND_ENV not in os.environ
