"""Generate: the engine actor. One vLLM engine per actor, loaded once in setup.

Decoding is constrained by the task (JSON schema or a choice list) so outputs parse; a
failure on one row never fails its batch: the batch is retried row by row and only the
failing rows become `engine_error` rejects.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.config import JobConfig
from enrich.cpu_slots import bind_engine_to_own_cores
from enrich.model_store import local_model_path
from enrich.tasks import Task, task_for
from enrich.validate import RejectReason, validate_output

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
        **_lora_kwargs(cfg),
    }


def _lora_kwargs(cfg: JobConfig) -> dict[str, Any]:
    adapters = {s.adapter for s in cfg.task_specs() if s.adapter}
    if not adapters:
        return {}
    # One slot per distinct adapter, so a multi-task batch never waits for an adapter swap.
    return {"enable_lora": True, "max_lora_rank": cfg.engine.max_lora_rank, "max_loras": len(adapters)}


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
    from vllm.sampling_params import StructuredOutputsParams

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
    )


@dataclass(frozen=True)
class TaskDecoding:
    """What the engine needs per task: the task (for retry decisions), its sampling params
    (constraint included) and its LoRA adapter, if any."""

    task: Task
    params: Any
    lora: Any | None


class EngineActor:
    """Ray Data callable class: `__init__` is the setup (engine load), `__call__` a batch.

    Each row is decoded with its task's params and adapter (`_enrich_task`), so the tasks of a
    multi-task run share one engine. Rows whose output is cut off at max_tokens are retried
    with twice the budget; rows whose output fails validation are resampled (seeded on GPU, so
    reruns repeat); both within `sampling.max_attempts`. The validate stage judges the last attempt.
    """

    def __init__(self, cfg: JobConfig) -> None:
        from vllm import LLM

        started = time.monotonic()
        self.cfg = cfg
        self._cpu_slot = None if _has_gpu() else bind_engine_to_own_cores(_cores_per_engine(cfg))
        self.llm = LLM(**engine_kwargs(cfg))
        adapters: dict[str, int] = {}
        self.tasks: dict[str, TaskDecoding] = {}
        for label, sub in cfg.task_configs().items():
            task = task_for(sub)
            lora_id = adapters.setdefault(sub.adapter, len(adapters) + 1) if sub.adapter else 0
            self.tasks[label] = TaskDecoding(task, sampling_params(sub, task), lora_request(sub, lora_id))
        self.default_label = next(iter(self.tasks))
        self._warm_up()
        log.info("engine ready in %.1fs (tasks: %s)", time.monotonic() - started, ", ".join(self.tasks))

    def _warm_up(self) -> None:
        """Compile each decoding constraint once now: a schema the backend rejects must fail
        the job at start with its cause, not turn every row into an engine_error."""
        prompt = [self.llm.get_tokenizer().eos_token_id or 0]
        for label, d in self.tasks.items():
            try:
                self._run([prompt], [d.params], [d.lora])
            except Exception as exc:
                raise RuntimeError(f"task {label!r}: engine cannot decode with its constraint: {exc}") from exc

    def __call__(self, table: pa.Table) -> pa.Table:
        reasons = table.column(C.REASON).to_pylist()
        messages = table.column(C.MESSAGE).to_pylist()
        token_ids = table.column(C.PROMPT_TOKEN_IDS).to_pylist()
        texts_in = table.column(C.TEXT).to_pylist()
        n = table.num_rows
        labels = table.column(C.TASK).to_pylist() if C.TASK in table.column_names else [self.default_label] * n
        decoding = [self.tasks[label] for label in labels]
        texts: list[str | None] = [None] * n
        finish: list[str | None] = [None] * n
        n_tokens: list[int | None] = [None] * n
        attempts = [0] * n
        params = {i: decoding[i].params for i, r in enumerate(reasons) if r is None}

        for attempt in range(1, self.cfg.sampling.max_attempts + 1):
            if not params:
                break
            order = list(params)
            results = self._generate(
                [token_ids[i] for i in order], [params[i] for i in order], [decoding[i].lora for i in order]
            )
            params = {}
            for i, result in zip(order, results):
                attempts[i] = attempt
                if isinstance(result, Exception):
                    reasons[i], messages[i] = "engine_error", f"{type(result).__name__}: {result}"
                    continue
                texts[i], finish[i], tokens = result
                n_tokens[i] = (n_tokens[i] or 0) + tokens  # all attempts: the work the row cost
                retry = self._retry_params(decoding[i], result, texts_in[i], len(token_ids[i]), attempt)
                if retry is not None:
                    params[i] = retry

        table = C.replace(table, C.REASON, pa.array(reasons, pa.string()))
        table = C.replace(table, C.MESSAGE, pa.array(messages, pa.string()))
        table = table.append_column(C.RAW_OUTPUT, pa.array(texts, pa.string()))
        table = table.append_column(C.FINISH_REASON, pa.array(finish, pa.string()))
        table = table.append_column(C.OUTPUT_TOKENS, pa.array(n_tokens, pa.int32()))
        return table.append_column(C.ATTEMPTS, pa.array(attempts, pa.int32()))

    def _retry_params(
        self, d: TaskDecoding, result: tuple[str, str | None, int], text: str | None, prompt_len: int,
        attempt: int,
    ) -> Any | None:
        """Sampling params for another attempt, or None when the output is good (or final)."""
        if attempt >= self.cfg.sampling.max_attempts:
            return None
        raw, finish_reason, _ = result
        record, reason, _ = validate_output(d.task, raw, finish_reason, {"text": text})
        if record is not None:
            return None
        params = d.params.clone()
        if reason == RejectReason.TRUNCATED:
            room = self.cfg.engine.max_model_len - prompt_len
            params.max_tokens = min(d.params.max_tokens * 2**attempt, room)
            return params if params.max_tokens > d.params.max_tokens else None
        params.temperature = self.cfg.sampling.retry_temperature
        params.seed = request_seed(self.cfg, attempt)  # resample, reproducibly where the platform allows
        return params

    def _generate(
        self, prompts: list[list[int]], params: list[Any], loras: list[Any | None]
    ) -> list[tuple[str, str | None, int] | Exception]:
        if not prompts:
            return []
        try:
            return [_unpack(o) for o in self._run(prompts, params, loras)]
        except Exception as exc:  # noqa: BLE001 - isolate the bad row(s) below
            if _engine_dead(exc):
                raise  # the actor restarts and Ray re-runs the batch
            log.warning("batch of %d failed (%s); retrying row by row", len(prompts), exc)
        results: list[tuple[str, str | None, int] | Exception] = []
        for prompt, param, lora in zip(prompts, params, loras):
            try:
                results.append(_unpack(self._run([prompt], [param], [lora])[0]))
            except Exception as exc:  # noqa: BLE001
                if _engine_dead(exc):
                    raise
                results.append(exc)
        return results

    def _run(self, prompts: list[list[int]], params: list[Any], loras: list[Any | None]) -> list[Any]:
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        lora: Any = loras if any(loras) else None  # per request: tasks may differ in adapter
        return self.llm.generate(requests, params, use_tqdm=False, lora_request=lora)


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


def _unpack(output: Any) -> tuple[str, str | None, int]:
    completion = output.outputs[0]
    return completion.text, completion.finish_reason, len(completion.token_ids)


def _engine_dead(exc: Exception) -> bool:
    return type(exc).__name__ in ("EngineDeadError", "EngineGenerateError")
