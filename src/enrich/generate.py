"""Generate: the engine actor. One vLLM engine per actor, loaded once in setup.

Decoding is constrained by the task (JSON schema or a choice list) so outputs parse; a
failure on one row never fails its batch: the batch is retried row by row and only the
failing rows become `engine_error` rejects.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.config import JobConfig
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
        **({"enable_lora": True, "max_lora_rank": e.max_lora_rank} if cfg.adapter else {}),
    }


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


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
        seed=cfg.engine.seed,
        structured_outputs=constraint,
    )


class EngineActor:
    """Ray Data callable class: `__init__` is the setup (engine load), `__call__` a batch.

    Rows whose output is cut off at max_tokens are retried with twice the budget; rows whose
    output fails validation are resampled (seeded, so reruns repeat); both within
    `sampling.max_attempts`. The validate stage then judges the last attempt.
    """

    def __init__(self, cfg: JobConfig) -> None:
        from vllm import LLM

        started = time.monotonic()
        self.cfg = cfg
        self.task = task_for(cfg)
        self.llm = LLM(**engine_kwargs(cfg))
        self.params = sampling_params(cfg, self.task)
        self.lora = lora_request(cfg)
        self._warm_up()
        log.info("engine ready in %.1fs", time.monotonic() - started)

    def _warm_up(self) -> None:
        """Compile the decoding constraint once now: a schema the backend rejects must fail
        the job at start with its cause, not turn every row into an engine_error."""
        try:
            self._run([[self.llm.get_tokenizer().eos_token_id or 0]], [self.params])
        except Exception as exc:
            raise RuntimeError(f"task {self.task.name!r}: engine cannot decode with its constraint: {exc}") from exc

    def __call__(self, table: pa.Table) -> pa.Table:
        reasons = table.column(C.REASON).to_pylist()
        messages = table.column(C.MESSAGE).to_pylist()
        token_ids = table.column(C.PROMPT_TOKEN_IDS).to_pylist()
        texts_in = table.column(C.TEXT).to_pylist()
        n = table.num_rows
        texts: list[str | None] = [None] * n
        finish: list[str | None] = [None] * n
        n_tokens: list[int | None] = [None] * n
        attempts = [0] * n
        params = {i: self.params for i, r in enumerate(reasons) if r is None}

        for attempt in range(1, self.cfg.sampling.max_attempts + 1):
            if not params:
                break
            order = list(params)
            results = self._generate([token_ids[i] for i in order], [params[i] for i in order])
            params = {}
            for i, result in zip(order, results):
                attempts[i] = attempt
                if isinstance(result, Exception):
                    reasons[i], messages[i] = "engine_error", f"{type(result).__name__}: {result}"
                    continue
                texts[i], finish[i], n_tokens[i] = result
                retry = self._retry_params(result, texts_in[i], len(token_ids[i]), attempt)
                if retry is not None:
                    params[i] = retry

        table = C.replace(table, C.REASON, pa.array(reasons, pa.string()))
        table = C.replace(table, C.MESSAGE, pa.array(messages, pa.string()))
        table = table.append_column(C.RAW_OUTPUT, pa.array(texts, pa.string()))
        table = table.append_column(C.FINISH_REASON, pa.array(finish, pa.string()))
        table = table.append_column(C.OUTPUT_TOKENS, pa.array(n_tokens, pa.int32()))
        return table.append_column(C.ATTEMPTS, pa.array(attempts, pa.int32()))

    def _retry_params(
        self, result: tuple[str, str | None, int], text: str | None, prompt_len: int, attempt: int
    ) -> Any | None:
        """Sampling params for another attempt, or None when the output is good (or final)."""
        if attempt >= self.cfg.sampling.max_attempts:
            return None
        raw, finish_reason, _ = result
        record, reason, _ = validate_output(self.task, raw, finish_reason, {"text": text})
        if record is not None:
            return None
        params = self.params.clone()
        if reason == RejectReason.TRUNCATED:
            room = self.cfg.engine.max_model_len - prompt_len
            params.max_tokens = min(self.params.max_tokens * 2**attempt, room)
            return params if params.max_tokens > self.params.max_tokens else None
        params.temperature = self.cfg.sampling.retry_temperature
        params.seed = self.cfg.engine.seed + attempt  # resample, reproducibly
        return params

    def _generate(
        self, prompts: list[list[int]], params: list[Any]
    ) -> list[tuple[str, str | None, int] | Exception]:
        if not prompts:
            return []
        try:
            return [_unpack(o) for o in self._run(prompts, params)]
        except Exception as exc:  # noqa: BLE001 - isolate the bad row(s) below
            if _engine_dead(exc):
                raise  # the actor restarts and Ray re-runs the batch
            log.warning("batch of %d failed (%s); retrying row by row", len(prompts), exc)
        results: list[tuple[str, str | None, int] | Exception] = []
        for prompt, param in zip(prompts, params):
            try:
                results.append(_unpack(self._run([prompt], [param])[0]))
            except Exception as exc:  # noqa: BLE001
                if _engine_dead(exc):
                    raise
                results.append(exc)
        return results

    def _run(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        requests = [{"prompt_token_ids": ids} for ids in prompts]
        return self.llm.generate(requests, params, use_tqdm=False, lora_request=self.lora)


def lora_request(cfg: JobConfig) -> Any | None:
    """The adapter as a vLLM LoRARequest (local folder, s3:// prefix or hub id), or None."""
    if not cfg.adapter:
        return None
    from vllm.lora.request import LoRARequest

    path = local_model_path(cfg.adapter, cfg.s3_endpoint)
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(path)
    return LoRARequest(lora_name="adapter", lora_int_id=1, lora_path=path)


def _unpack(output: Any) -> tuple[str, str | None, int]:
    completion = output.outputs[0]
    return completion.text, completion.finish_reason, len(completion.token_ids)


def _engine_dead(exc: Exception) -> bool:
    return type(exc).__name__ in ("EngineDeadError", "EngineGenerateError")
