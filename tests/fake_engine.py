"""A small fake of vLLM's async engine (AsyncLLM's `generate` stream) and a backend for
`EngineActor`, so the actor's logic is tested fast, without vLLM. Used in-process and inside
real Ray actors (the test registers this module for pickling by value)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.generate import TaskDecoding

POISON = 666  # a prompt token that kills the fake engine


class EngineDeadError(Exception):
    """Same name as vLLM's: the backend judges death by it."""


@dataclasses.dataclass
class FakeParams:
    max_tokens: int
    temperature: float
    seed: int | None = None
    fail: bool = False  # the warm-up refusal: the fake rejects these params

    def clone(self) -> FakeParams:
        return dataclasses.replace(self)


Script = Callable[[list[int], FakeParams, Any], tuple[str, str | None, int]]


def answer(label: str) -> Script:
    return lambda prompt, params, lora: (label, "stop", 1)


class FakeEngine:
    """`script(prompt_ids, params, lora)` -> (text, finish_reason, n_tokens), or raises."""

    def __init__(self, script: Script, delay: float = 0.01, die_on: int | None = POISON,
                 marker: str | None = None) -> None:
        self.script = script
        self.delay = delay
        self.die_on = die_on
        self.marker = marker  # a file: while it exists, a poison prompt kills the engine (once)
        self.calls: list[tuple[list[int], FakeParams, Any, str]] = []
        self.running = 0
        self.max_running = 0
        self.errored = False
        self.shut_down = False

    async def generate(self, prompt: dict[str, Any], params: FakeParams, request_id: str, lora_request: Any = None):
        ids = prompt["prompt_token_ids"]
        self.calls.append((ids, params, lora_request, request_id))
        if params.fail:
            raise ValueError("grammar rejected by the backend")
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay * (1 + ids[0] % 3))  # rows finish out of order
            if self.die_on in ids and (self.marker is None or Path(self.marker).exists()):
                if self.marker is not None:
                    Path(self.marker).unlink()  # dies once: the restarted engine decodes the row
                self.errored = True
                raise EngineDeadError("EngineCore died")
            text, finish, n = self.script(ids, params, lora_request)
        finally:
            self.running -= 1
        yield SimpleNamespace(finished=True, outputs=[SimpleNamespace(text=text, finish_reason=finish, token_ids=[0] * n)])

    def get_tokenizer(self) -> Any:
        return SimpleNamespace(eos_token_id=0)

    def shutdown(self) -> None:
        self.shut_down = True


class FakeBackend:
    def __init__(self, engine: FakeEngine, max_num_seqs: int = 256, fail_warm_up: bool = False) -> None:
        self.engine = engine
        self.max_num_seqs = max_num_seqs
        self.fail_warm_up = fail_warm_up

    def start(self, cfg: Any, occupancy: Any) -> tuple[FakeEngine, int]:
        return self.engine, self.max_num_seqs

    def decoding(self, cfg: Any, task: Any, lora_id: int) -> TaskDecoding:
        params = FakeParams(cfg.sampling.max_tokens, cfg.sampling.temperature, fail=self.fail_warm_up)
        return TaskDecoding(task, params, f"lora-{lora_id}" if lora_id else None)

    def retry_seed(self, cfg: Any, attempt: int) -> int:
        return 1000 + attempt

    def is_dead(self, exc: BaseException, engine: Any) -> bool:
        return type(exc).__name__ == "EngineDeadError"


def batch(n: int, start: int = 0, reasons: dict[int, str] | None = None, labels: list[str] | None = None,
          poison: set[int] | None = None) -> pa.Table:
    """A prepared batch: row i has prompt [start+i+1, ...]; `poison` rows carry POISON."""
    reasons = reasons or {}
    rows = range(start, start + n)
    columns = {
        C.ROW_ID: [f"r{i}" for i in rows],
        C.TEXT: [f"text {i}" for i in rows],
        C.REASON: [reasons.get(i) for i in rows],
        C.MESSAGE: [None] * n,
        C.PROMPT_TOKEN_IDS: [[i + 1, 7] + ([POISON] if poison and i in poison else []) for i in rows],
    }
    if labels is not None:
        columns[C.TASK] = labels
    return pa.table(columns, schema=pa.schema([
        (C.ROW_ID, pa.string()), (C.TEXT, pa.string()), (C.REASON, pa.string()), (C.MESSAGE, pa.string()),
        (C.PROMPT_TOKEN_IDS, pa.list_(pa.int32())), *([(C.TASK, pa.string())] if labels is not None else []),
    ]))


def pid_file(folder: str) -> str:
    return os.path.join(folder, f"pid-{os.getpid()}")


class BrokenBackend(FakeBackend):
    """An engine that cannot start (unreadable weights)."""

    def start(self, cfg: Any, occupancy: Any) -> tuple[FakeEngine, int]:
        raise OSError("weights unreadable")
