"""Continuous feeding: several batches in flight on one async engine, one coroutine per row.

Each row runs its whole retry ladder (truncated -> twice the budget; invalid -> resampled at
the retry temperature) as soon as its previous output is judged, with a new request id per
attempt, so the engine's running set refills as sequences finish instead of draining at every
batch tail. A row's error stays with the row (`engine_error`); a dead engine ends the process
(see `EngineActor`). Rows that were in flight when an engine died run in exclusive chunks that
shrink with each death, so a poison row ends up alone, kills the engine once more, and becomes
an `engine_error` reject while the rest of its batch completes.
Everything here runs on the engine actor's own event loop (one thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.engine_ledger import CONVICTED, EngineBudgetSpent, LedgerClient
from enrich.engine_stats import Occupancy
from enrich.validate import RejectReason, validate_output

log = logging.getLogger(__name__)

CHUNK_SHRINK = 4  # a suspect chunk is a quarter of the last one: 64 -> 16 -> 4 -> 1


@dataclass
class RowResult:
    text: str | None = None
    finish: str | None = None
    tokens: int | None = None
    attempts: int = 0
    reason: str | None = None
    message: str | None = None


class Gate:
    """Shared/exclusive access to the engine: normal attempts share it; a suspect chunk runs
    alone so that, if the engine dies, the rows in flight are exactly that chunk's. Waiting
    exclusive holders block new shared ones, so a chunk cannot starve."""

    def __init__(self) -> None:
        self.cond = asyncio.Condition()
        self.shared_n = 0
        self.exclusive_held = False
        self.exclusive_waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self.cond:
            await self.cond.wait_for(lambda: not self.exclusive_held and not self.exclusive_waiting)
            self.shared_n += 1
        try:
            yield
        finally:
            async with self.cond:
                self.shared_n -= 1
                self.cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self.cond:
            self.exclusive_waiting += 1
            await self.cond.wait_for(lambda: not self.exclusive_held and self.shared_n == 0)
            self.exclusive_waiting -= 1
            self.exclusive_held = True
        try:
            yield
        finally:
            async with self.cond:
                self.exclusive_held = False
                self.cond.notify_all()


@contextlib.asynccontextmanager
async def _no_gate() -> AsyncIterator[None]:
    yield


class Feeder:
    """Runs batches on `engine` (a vLLM AsyncLLM or a fake with the same `generate`)."""

    def __init__(
        self, cfg: Any, engine: Any, tasks: dict[str, Any], occupancy: Occupancy, ledger: LedgerClient,
        engine_id: str, retry_seed: Callable[[int], int | None], is_dead: Callable[[BaseException], bool],
        exit_process: Callable[[int], Any], max_pending: int,
    ) -> None:
        self.cfg, self.engine, self.tasks, self.occupancy, self.ledger = cfg, engine, tasks, occupancy, ledger
        self.engine_id = engine_id
        self.retry_seed, self.is_dead, self.exit_process = retry_seed, is_dead, exit_process
        self.default_label = next(iter(tasks))
        self.gate = Gate()
        self.pending = asyncio.Semaphore(max_pending)  # the engine's queue stays short (as Ray's)
        self.request_ids = itertools.count()
        self.in_flight: set[str] = set()
        self.at_death: list[str] = []  # the rows in flight when the engine died
        self.dead: BaseException | None = None

    async def run_batch(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        reasons = table.column(C.REASON).to_pylist()
        token_ids = table.column(C.PROMPT_TOKEN_IDS).to_pylist()
        texts_in = table.column(C.TEXT).to_pylist()
        labels = table.column(C.TASK).to_pylist() if C.TASK in table.column_names else [self.default_label] * n
        row_ids = table.column(C.ROW_ID).to_pylist()
        keys = [f"{label}/{row_id}" for label, row_id in zip(labels, row_ids)]
        todo = [i for i in range(n) if reasons[i] is None]  # marker rows and rejects pass through
        results: dict[int, RowResult] = {}

        levels = self.ledger.call("levels", [keys[i] for i in todo]) if todo else {}
        normal, suspects = [], []
        for i in todo:
            level = levels.get(keys[i], 0)
            if level == CONVICTED:
                results[i] = RowResult(reason="engine_error", message=(
                    "poison row: the engine died each time it decoded this row, the last time alone"))
            elif level:
                suspects.append((level, i))
            else:
                normal.append(i)

        async def one(i: int, gate: Callable[[], Any]) -> None:
            results[i] = await self._row(keys[i], token_ids[i], texts_in[i], labels[i], gate)

        async def isolate() -> None:
            for level, group in itertools.groupby(sorted(suspects), key=lambda s: s[0]):
                rows = [i for _, i in group]
                size = max(1, math.ceil(self.cfg.engine.batch_size / CHUNK_SHRINK**level))
                for start in range(0, len(rows), size):
                    async with self.gate.exclusive():
                        await asyncio.gather(*(one(i, _no_gate) for i in rows[start : start + size]))

        await asyncio.gather(*(one(i, self.gate.shared) for i in normal), isolate())
        if sorted(results) != todo:  # one row -> exactly one result, always
            raise AssertionError(f"rows without exactly one result: {sorted(set(todo) ^ set(results))}")
        return _with_results(table, reasons, results)

    async def _row(self, key: str, prompt: list[int], text: str | None, label: str, gate: Callable[[], Any]) -> RowResult:
        d = self.tasks[label]
        params, out = d.params, RowResult()
        for attempt in range(1, self.cfg.sampling.max_attempts + 1):
            out.attempts = attempt
            try:
                async with gate(), self.pending:
                    raw, finish, tokens = await self._generate(key, prompt, params, d.lora)
            except Exception as exc:  # noqa: BLE001 - the row's error stays with the row
                if self.dead is not None or self.is_dead(exc):
                    await self._engine_died(exc)
                out.reason, out.message = "engine_error", describe(exc)
                log.warning("row %s: %s", key, out.message)
                return out
            out.text, out.finish = raw, finish
            out.tokens = (out.tokens or 0) + tokens  # all attempts: the work the row cost
            params = self.retry_params(d, params, raw, finish, text, len(prompt), attempt)
            if params is None:
                break
        return out

    async def _generate(self, key: str, prompt: list[int], params: Any, lora: Any) -> tuple[str, str | None, int]:
        request_id = f"{self.engine_id}-{next(self.request_ids)}"
        self.in_flight.add(key)
        self.occupancy.submitted()
        try:
            final = None
            async for output in self.engine.generate(
                {"prompt_token_ids": prompt}, params, request_id, lora_request=lora
            ):
                final = output
            if final is None or not final.finished:
                raise RuntimeError(f"request {request_id} ended without a finished output")
            completion = final.outputs[0]
            return completion.text, completion.finish_reason, len(completion.token_ids)
        except Exception as exc:
            if not self.at_death and self.is_dead(exc):
                self.at_death = sorted(self.in_flight)  # before this row leaves the set
            raise
        finally:
            self.in_flight.discard(key)
            self.occupancy.finished()

    def retry_params(self, d: Any, params: Any, raw: str, finish: str | None, text: str | None,
                     prompt_len: int, attempt: int) -> Any | None:
        """Sampling params for another attempt, or None when the output is good (or final)."""
        if attempt >= self.cfg.sampling.max_attempts:
            return None
        record, reason, _ = validate_output(d.task, raw, finish, {"text": text})
        if record is not None:
            return None
        retry = params.clone()
        if reason == RejectReason.TRUNCATED:
            room = self.cfg.engine.max_model_len - prompt_len
            retry.max_tokens = min(d.params.max_tokens * 2**attempt, room)
            return retry if retry.max_tokens > params.max_tokens else None
        retry.temperature = self.cfg.sampling.retry_temperature
        retry.seed = self.retry_seed(attempt)  # reproducible where the platform allows (GPU)
        return retry

    async def _engine_died(self, exc: BaseException) -> None:
        """Report the rows in flight once, then end the process so Ray restarts the actor and
        re-runs its batches elsewhere than on this broken engine (re-raising would retry on it)."""
        if self.dead is None:
            self.dead = exc
            cause = describe(exc)
            spent = self.ledger.call("engine_died", self.engine_id, cause, self.at_death or sorted(self.in_flight))
            if spent:
                raise EngineBudgetSpent(f"engine error budget spent: {spent}")
            log.error("engine dead (%s); exiting the actor so Ray restarts it", cause)
            logging.shutdown()
            self.exit_process(1)
        raise EngineBudgetSpent(f"engine dead: {describe(self.dead)}")  # only reached in tests / budget spent


def describe(exc: BaseException) -> str:
    """`Type: message` of the exception and its causes (vLLM wraps the real one); an exception
    without a message (MemoryError reading a corrupt file) says where it was raised."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        text = str(seen)
        if not text and seen.__traceback__ is not None:
            tb = seen.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            code = tb.tb_frame.f_code
            text = f"raised in {code.co_name} ({os.path.basename(code.co_filename)})"
        parts.append(f"{type(seen).__name__}: {text}".rstrip(": "))
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _with_results(table: pa.Table, reasons: list[str | None], results: dict[int, RowResult]) -> pa.Table:
    n = table.num_rows
    messages = table.column(C.MESSAGE).to_pylist()
    texts: list[str | None] = [None] * n
    finish: list[str | None] = [None] * n
    tokens: list[int | None] = [None] * n
    attempts = [0] * n
    for i, r in results.items():
        texts[i], finish[i], tokens[i], attempts[i] = r.text, r.finish, r.tokens, r.attempts
        if r.reason is not None:
            reasons[i], messages[i] = r.reason, r.message
    table = C.replace(table, C.REASON, pa.array(reasons, pa.string()))
    table = C.replace(table, C.MESSAGE, pa.array(messages, pa.string()))
    table = table.append_column(C.RAW_OUTPUT, pa.array(texts, pa.string()))
    table = table.append_column(C.FINISH_REASON, pa.array(finish, pa.string()))
    table = table.append_column(C.OUTPUT_TOKENS, pa.array(tokens, pa.int32()))
    return table.append_column(C.ATTEMPTS, pa.array(attempts, pa.int32()))
