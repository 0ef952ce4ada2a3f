"""Generate: the engine actor. One async vLLM engine per actor, loaded once in setup.

Decoding is constrained by the task (JSON schema or a choice list) so outputs parse. Ray Data
hands the actor several batches at once (`max_concurrent_batches`); `engine_feed` keeps the
engine's running set full across them, one coroutine per row. A failure on one row never fails
its batch (the row becomes an `engine_error` reject); a dead engine ends the actor's process so
Ray restarts it, within the run's error budget (`engine_ledger`).

Reproducibility: on CPU vLLM keeps no per-request seed (`request_seed`), so a sampled output
depends on which rows share the engine's steps; with several batches in flight that grouping
differs between runs, so sampled CPU outputs are not repeatable. Greedy decoding (the default,
temperature 0) is, and so are seeded GPU runs.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import Any

import pyarrow as pa

from enrich.config import PENDING_HEADROOM, JobConfig
from enrich.cpu_slots import bind_engine_to_own_cores
from enrich.engine_feed import Feeder, describe
from enrich.engine_reaper import descendants, start_reaper, stop_and_wait
from enrich.engine_ledger import EngineBudgetSpent, Ledger, LedgerClient
from enrich.engine_stats import Occupancy, stat_logger_factory
from enrich.model_store import local_model_path
from enrich.tasks import Task, task_for

log = logging.getLogger(__name__)


def engine_kwargs(cfg: JobConfig) -> dict[str, Any]:
    """Arguments for `vllm.LLM`; the same on CPU and GPU (vLLM picks its platform)."""
    e = cfg.engine
    gpu = _has_gpu()
    return {
        "model": local_model_path(cfg.model, cfg.s3_endpoint),
        "revision": cfg.model_revision,
        "max_model_len": e.max_model_len,
        "gpu_memory_utilization": e.gpu_memory_utilization or (0.9 if gpu else 0.25),
        "tensor_parallel_size": e.tensor_parallel_size,
        "dtype": e.dtype,
        "enforce_eager": (not gpu) if e.enforce_eager is None else e.enforce_eager,
        "seed": e.seed,
        # Compact JSON: without it random or weak models can emit whitespace forever.
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        "use_tqdm_on_load": False,  # a progress bar in a batch job's log; vLLM logs the load time
        **_lora_kwargs(cfg),
        **_scheduler_kwargs(cfg),
    }


def _scheduler_kwargs(cfg: JobConfig) -> dict[str, Any]:
    # Only when pinned: vLLM's defaults depend on the platform and the engine class.
    e = cfg.engine
    pinned = {"max_num_seqs": e.max_num_seqs, "max_num_batched_tokens": e.max_num_batched_tokens}
    return {k: v for k, v in pinned.items() if v is not None}


def _lora_kwargs(cfg: JobConfig) -> dict[str, Any]:
    adapters = {s.adapter for s in cfg.task_specs() if s.adapter}
    if not adapters:
        return {}
    # One slot per distinct adapter, so a multi-task batch never waits for an adapter swap.
    return {"enable_lora": True, "max_lora_rank": cfg.engine.max_lora_rank, "max_loras": len(adapters)}


def import_off_stack(*modules: str) -> None:
    """Import `modules` in a short-lived thread of their own. Importing vLLM leaves a frame of
    the importing stack alive, and a frame keeps its callers' frames and their locals: imported
    under the actor's start-up, the actor and its engine stayed referenced for the life of the
    process, so Ray Data's graceful pool shutdown never ran the actor's __del__ and the engine
    was killed with the process (EngineDeadError and resource_tracker tracebacks at every run's end)."""
    failed: list[BaseException] = []

    def load() -> None:
        try:
            for name in modules:
                importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            failed.append(exc)

    thread = threading.Thread(target=load, name="import-vllm")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


@functools.cache  # asked per retried row (request_seed): answer once per process
def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cores_per_engine(cfg: JobConfig) -> int:
    # Ray's CPU reservation is bookkeeping (it may be fractional); the binding is physical cores.
    return max(1, round(cfg.engine.cpus_per_engine))


def request_seed(cfg: JobConfig, offset: int = 0) -> int | None:
    """A per-request seed on GPU; None on CPU, where vLLM cannot keep one: a seeded sampled
    request whose prefill is chunked kills the engine ('CPU Generator does not use offset').
    On CPU, sampled (non-greedy) outputs then follow the engine seed and the batch order."""
    return cfg.engine.seed + offset if _has_gpu() else None


def sampling_params(cfg: JobConfig, task: Task) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    if task.choices:
        constraint = StructuredOutputsParams(choice=list(task.choices))
    else:
        constraint = StructuredOutputsParams(json=task.json_schema())
    s = cfg.sampling
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=request_seed(cfg),
        structured_outputs=constraint,
        output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, not one per token
    )


@dataclass(frozen=True)
class TaskDecoding:
    """What the engine needs per task: the task (for retry decisions), its sampling params
    (constraint included) and its LoRA adapter, if any."""

    task: Task
    params: Any
    lora: Any | None


class VllmBackend:
    """The real engine: vLLM's AsyncLLM. Tests pass a fake with the same four methods."""

    def start(self, cfg: JobConfig, occupancy: Occupancy) -> tuple[Any, int]:
        """(engine, max_num_seqs). Runs on the actor's engine loop: AsyncLLM binds its output
        handler to the loop it is created on."""
        import_off_stack("vllm", "vllm.config", "vllm.v1.engine.async_llm")
        from vllm import AsyncEngineArgs
        from vllm.config import StructuredOutputsConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = engine_kwargs(cfg)
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(**kwargs["structured_outputs_config"])
        vllm_config = AsyncEngineArgs(**kwargs, disable_log_stats=True).create_engine_config()
        engine = AsyncLLM.from_vllm_config(
            vllm_config, stat_loggers=[stat_logger_factory(occupancy)], disable_log_stats=True
        )
        return engine, vllm_config.scheduler_config.max_num_seqs

    def decoding(self, cfg: JobConfig, task: Task, lora_id: int) -> TaskDecoding:
        return TaskDecoding(task, sampling_params(cfg, task), lora_request(cfg, lora_id))

    def retry_seed(self, cfg: JobConfig, attempt: int) -> int | None:
        return request_seed(cfg, attempt)

    def is_dead(self, exc: BaseException, engine: Any) -> bool:
        # EngineGenerateError is a row's own failure in the async engine; only a dead core is fatal.
        return type(exc).__name__ == "EngineDeadError" or bool(getattr(engine, "errored", False))


class EngineActor:
    """Ray Data callable class: `__init__` is the setup (engine load), `__call__` a batch.

    Each row is decoded with its task's params and adapter (`_enrich_task`), so the tasks of a
    multi-task run share one engine. Rows whose output is cut off at max_tokens are retried
    with twice the budget; rows whose output fails validation are resampled (seeded on GPU, so
    reruns repeat); both within `sampling.max_attempts`. The validate stage judges the last attempt.
    `ledger`: the run's ledger actor name (`engine_ledger.start_ledger`), or a `Ledger` (tests).
    """

    exit_process: Callable[[int], Any] = staticmethod(os._exit)

    def __init__(self, cfg: JobConfig, ledger: str | Ledger | None = None, backend: Any = None) -> None:
        started = time.monotonic()
        self.cfg = cfg
        self.backend = backend or VllmBackend()
        self.engine_id = _engine_id()
        self.ledger = LedgerClient(ledger, cfg.engine.max_engine_deaths_per_hour)
        refusal = self.ledger.call("admit_start", self.engine_id)
        if refusal:
            raise EngineBudgetSpent(f"engine error budget spent: {refusal}")
        # The engine's processes must not outlive this actor, however it dies (engine_reaper).
        self._reaper = start_reaper() if isinstance(self.backend, VllmBackend) else None
        self._before_engine = set(descendants(os.getpid())) if self._reaper is not None else None
        self.loop = asyncio.new_event_loop()  # the engine's own loop: setup and batches share it
        threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True).start()
        try:
            self.feeder = self._on_loop(self._start()).result()
        except Exception as exc:
            # Ray Data replaces an actor whose setup failed, up to max_start_failures in a row.
            self.ledger.call("start_failed", self.engine_id, describe(exc))
            self.shutdown()
            raise EngineStartError(f"engine failed to start: {describe(exc)}") from exc
        self._warm_up()
        self.feeder.occupancy.reset()
        self.ledger.call("ready", self.engine_id)
        log.info("engine ready in %.1fs (tasks: %s)", time.monotonic() - started, ", ".join(self.feeder.tasks))

    async def _start(self) -> Feeder:
        cfg = self.cfg
        self._cpu_slot = None
        if isinstance(self.backend, VllmBackend) and not _has_gpu():
            self._cpu_slot = bind_engine_to_own_cores(_cores_per_engine(cfg))
        occupancy = Occupancy(1)
        engine, max_num_seqs = self.backend.start(cfg, occupancy)
        occupancy.max_num_seqs = max(1, max_num_seqs)
        adapters: dict[str, int] = {}
        tasks: dict[str, TaskDecoding] = {}
        for label, sub in cfg.task_configs().items():
            lora_id = adapters.setdefault(sub.adapter, len(adapters) + 1) if sub.adapter else 0
            tasks[label] = self.backend.decoding(sub, task_for(sub), lora_id)
        in_flight = cfg.engine.batch_size * cfg.engine.batches_in_flight()
        if in_flight < max_num_seqs:
            log.warning("batch_size x max_concurrent_batches = %d < max_num_seqs %d: the engine cannot be kept "
                        "full", in_flight, max_num_seqs)
        # No reference back to self from the feeder: with none, Ray Data's graceful pool shutdown
        # (it drops the UDF) runs __del__ at once, so the engine is shut down while the actor
        # lives, not killed with it (vLLM then logs EngineDeadError tracebacks).
        backend = self.backend
        return Feeder(
            cfg, engine, tasks, occupancy, self.ledger, self.engine_id,
            retry_seed=lambda attempt: backend.retry_seed(cfg, attempt),
            is_dead=lambda exc: backend.is_dead(exc, engine),
            exit_process=self.exit_process,
            max_pending=math.ceil(PENDING_HEADROOM * max_num_seqs),
        )

    def _on_loop(self, coro: Any) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _warm_up(self) -> None:
        """Compile each decoding constraint once now: a schema the backend rejects must fail
        the job at start with its cause, not turn every row into an engine_error."""
        tokenizer = self.feeder.engine.get_tokenizer()
        prompt = [tokenizer.eos_token_id or 0]
        for label, d in self.feeder.tasks.items():
            params = d.params.clone()
            params.max_tokens = 1  # compiling the constraint is the point, not the output
            try:
                self._on_loop(self.feeder._generate("warm-up", prompt, params, d.lora)).result()
            except Exception as exc:
                raise RuntimeError(f"task {label!r}: engine cannot decode with its constraint: {describe(exc)}") from exc

    async def __call__(self, table: pa.Table) -> pa.Table:
        self.ledger.call("batch_started", self.engine_id, wait=False)
        out, stats = await asyncio.wrap_future(self._on_loop(self._batch(table)))
        self.ledger.call("report_stats", self.engine_id, stats, wait=False)
        return out

    async def _batch(self, table: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
        out = await self.feeder.run_batch(table)
        return out, self.feeder.occupancy.summary()

    def shutdown(self) -> None:
        """Stop the engine's processes and wait until they are gone: one still unlinking shared memory
        as the actor exits finds its resource tracker killed, starts one that prints KeyErrors."""
        feeder = getattr(self, "feeder", None)
        if feeder is not None and hasattr(feeder.engine, "shutdown"):
            processes = self._engine_processes()
            engine, self.feeder, feeder = feeder.engine, None, None
            try:
                self._on_loop(_stop_output_handler(engine)).result(timeout=10)
            except Exception:  # noqa: BLE001 - a loop already gone: vLLM's shutdown still runs
                log.debug("could not stop the engine's output handler first", exc_info=True)
            engine.shutdown()
            del engine  # the last reference: vLLM's own __del__ runs now, not at interpreter exit
            killed = stop_and_wait(processes, timeout=15.0)
            if killed:
                log.warning("engine processes still running 15 s after the engine's shutdown were killed")
        loop = getattr(self, "loop", None)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        slot = getattr(self, "_cpu_slot", None)
        if slot is not None:  # the engine's cores are free for the next engine on this node
            os.close(slot)
            self._cpu_slot = None
        ledger = getattr(self, "ledger", None)
        if ledger is not None:  # the driver waits for this before it ends the run (and Ray)
            try:
                ledger.call("stopped", self.engine_id, timeout=10)
            except Exception:  # noqa: BLE001 - a ledger gone with its driver: nobody waits
                log.debug("could not tell the ledger this engine stopped", exc_info=True)

    def _engine_processes(self) -> dict[int, str]:
        """Processes below this one born since the engine started, but the resource tracker."""
        if self._before_engine is None:
            return {}
        tracker = resource_tracker._resource_tracker._pid  # None unless this process started it
        return {p: t for p, t in descendants(os.getpid()).items() if p not in self._before_engine and p != tracker}

    def __del__(self) -> None:  # Ray Data drops the UDF when the pool shuts down gracefully
        try:
            self.shutdown()
        except Exception:  # noqa: BLE001 - interpreter teardown: nothing left to report to
            pass


async def _stop_output_handler(engine: Any) -> None:
    """vLLM's AsyncLLM.shutdown stops the engine core before it cancels the output handler
    task, which meanwhile finds the core gone and logs an EngineDeadError traceback at every
    clean end of a run. Cancel the handler first, on its own loop."""
    handler = getattr(engine, "output_handler", None)
    if handler is None or handler.done():
        return
    handler.cancel()
    try:
        await handler
    except asyncio.CancelledError:
        pass


class EngineStartError(RuntimeError):
    """The engine could not start (bad weights, out of memory, ...); the message has the cause."""


def _engine_id() -> str:
    """The Ray actor id (kept across restarts, so the ledger sees one engine restart), else pid."""
    try:
        import ray

        actor_id = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001
        actor_id = None
    return actor_id or f"local-{os.getpid()}"


def lora_request(cfg: JobConfig, lora_id: int = 1) -> Any | None:
    """The adapter as a vLLM LoRARequest (local folder, s3:// prefix or hub id), or None."""
    if not cfg.adapter:
        return None
    from vllm.lora.request import LoRARequest

    path = local_model_path(cfg.adapter, cfg.s3_endpoint)
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(path)
    return LoRARequest(lora_name=f"adapter-{lora_id}", lora_int_id=lora_id, lora_path=path)
