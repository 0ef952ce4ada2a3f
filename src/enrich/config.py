"""Job configuration: pydantic models that drive the CLI, the YAML job spec and the fingerprint.

Every field carries a description; `enrich run --help` is generated from them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from enrich.locations import overlaps

# vLLM's max_num_seqs for the async engine enrich builds when none is pinned
# (SchedulerConfig.DEFAULT_MAX_NUM_SEQS; create_engine_config's usage context has no default of its own).
VLLM_ENGINE_MAX_NUM_SEQS = 128
# Requests an engine actor keeps submitted: this x max_num_seqs, so a finished sequence is replaced
# in the next step without waiting for a coroutine to wake.
PENDING_HEADROOM = 1.1


class EngineConfig(BaseModel):
    """How each actor's vLLM engine is built."""

    model_config = ConfigDict(extra="forbid")

    num_engines: int = Field(1, ge=1, description="Actors in the pool, one vLLM engine each.")
    gpus_per_engine: float | None = Field(
        None, ge=0, description="GPUs per actor; default: 1 if the cluster has GPUs, else 0 (CPU)."
    )
    cpus_per_engine: float = Field(
        1.0,
        gt=0,
        description="CPUs Ray reserves per engine actor. On a CPU node each engine is also "
        "bound to its own round(cpus_per_engine) cores; for one engine per core on an N-core "
        "node use --num-engines N --cpus-per-engine (N-0.5)/N, leaving Ray room for the light stages.",
    )
    batch_size: int = Field(64, ge=1, description="Rows per batch handed to an engine actor.")
    max_model_len: int = Field(2048, ge=64, description="Context length (prompt + output tokens).")
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=0.95,
        description="Share of GPU memory for weights + KV cache (default 0.9); on CPU the share "
        "of the NUMA node's RAM the engine may use (default 0.25; 0.92 fails).",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans.")
    dtype: str = Field("auto", description="Weights dtype: auto, bfloat16, float16, float32.")
    enforce_eager: bool | None = Field(
        None, description="Skip CUDA graph capture: faster start, slower decode (default: on CPU only)."
    )
    seed: int = Field(0, description="Engine seed, for reproducible sampling.")
    max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank the engine accepts.")
    max_num_seqs: int | None = Field(
        None, ge=1,
        description="Sequences the engine schedules at once (vLLM max_num_seqs); default: vLLM's "
        "own for the async engine. Pin it to compare systems at equal settings.",
    )
    max_num_batched_tokens: int | None = Field(
        None, ge=1,
        description="Tokens the engine schedules per step (vLLM max_num_batched_tokens); default: vLLM's.",
    )
    max_concurrent_batches: int | None = Field(
        None,
        ge=1,
        description="Batches in flight per engine actor: enough to keep the engine's running set "
        "full across batch boundaries, few enough that rows never wait at one engine while another "
        "idles. Default: ceil(1.1 x max_num_seqs / batch_size) + 2 (max_num_seqs unset: vLLM's 128).",
    )
    max_engine_deaths_per_hour: int = Field(
        20,
        ge=0,
        description="Error budget: engine deaths (crash, kill) per hour the run survives by "
        "restarting the engine; one more fails the run, naming the last cause.",
    )
    max_start_failures: int = Field(
        3,
        ge=1,
        description="Error budget: engine start-up failures in a row (reset when an engine "
        "starts) before the run fails with the engine's cause.",
    )

    def batches_in_flight(self) -> int:
        """`max_concurrent_batches`, or what fills max_num_seqs (with the feeder's headroom) plus
        two batches to refill from: a batch returns only when its slowest row is done, so the
        batches in their tails hold few rows (+1 fell below 0.9 of an always-full engine in the
        GPU-like simulation at 256 sequences, bench/feeding_actor.py)."""
        if self.max_concurrent_batches is not None:
            return self.max_concurrent_batches
        seqs = self.max_num_seqs or VLLM_ENGINE_MAX_NUM_SEQS
        return math.ceil(PENDING_HEADROOM * seqs / self.batch_size) + 2


class SamplingConfig(BaseModel):
    """Decoding settings; part of the fingerprint."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Output token budget per row.")
    max_attempts: int = Field(
        2,
        ge=1,
        description="Generations per row: a truncated output is retried with twice the "
        "max_tokens, an invalid one resampled; then the row is rejected.",
    )
    retry_temperature: float = Field(0.7, ge=0, description="Temperature of resampling attempts.")


class TaskOptions(BaseModel):
    """Options of the built-in tasks (each names its task)."""

    model_config = ConfigDict(extra="forbid")

    flag_invalid: bool = Field(
        False,
        description="address: keep rows whose divisions/phone cannot be reconciled, with an "
        "address_issue column, instead of rejecting them.",
    )
    max_keywords: int = Field(8, ge=1, le=64, description="keywords: most keywords per row.")
    require_grounded: bool = Field(
        False, description="keywords: keep only keywords found in the text; reject rows with none."
    )
    labels: list[str] | None = Field(
        None,
        description="classify: category labels, comma-separated on the command line "
        "(default: the 14 MMLU-Pro categories).",
    )
    output_schema: str | None = Field(
        None, description="custom: output model as module:Class or a JSON Schema file (.json)."
    )
    prompt_template: str | None = Field(
        None, description="custom: prompt template file with {text} and {column} placeholders."
    )
    system_prompt: str | None = Field(
        None, description="custom: system prompt (default: asks for JSON matching the schema)."
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        return [s.strip() for s in value.split(",")] if isinstance(value, str) else value


class TaskSpec(BaseModel):
    """One task of a multi-task run (the job spec's `tasks:` list); unset fields inherit the job's."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(..., description="Task name; see `enrich tasks`.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Output sub-folder and row label (default: the task name); unique per run.",
    )
    adapter: str | None = Field(
        None, description="LoRA adapter of this task (hub id, local folder or s3:// prefix)."
    )
    task_options: TaskOptions | None = Field(
        None, description="Options of this task (default: the job's task_options)."
    )

    @property
    def label(self) -> str:
        return self.name or self.task


class JobConfig(BaseModel):
    """One enrich run: what to read, which task and model, where to write."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(
        ..., description="File, folder, glob or URL (s3://...) of Parquet/JSONL shards."
    )
    output: str = Field(..., description="Output prefix (local folder or s3://...).")
    task: str | list[str] = Field(
        "address",
        description="Task name (see `enrich tasks`). Repeat --task to run several tasks over the "
        "input in one pass, sharing the engines; each is written to OUTPUT/<task>/.",
    )
    tasks: list[TaskSpec] = Field(
        default_factory=list,
        description="Job spec only: several tasks, each with its own adapter and options "
        "(instead of `task`); each is written to OUTPUT/<name>/.",
    )
    model: str = Field(
        ..., description="Model: hub id, local folder, or s3:// prefix copied once per node."
    )
    model_revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    adapter: str | None = Field(
        None, description="LoRA adapter: hub id, local folder or s3:// prefix (vLLM LoRA)."
    )
    format: Literal["auto", "parquet", "jsonl"] = Field(
        "auto", description="Input format; auto decides from each file's extension."
    )
    text_column: str = Field("text", description="Input column holding the raw text.")
    id_column: str | None = Field(
        None, description="Input column holding a row id; default: derived from file and row index."
    )
    s3_endpoint: str | None = Field(
        None, description="Endpoint URL for S3-compatible stores (credentials from the AWS env)."
    )
    read_chunk_rows: int = Field(
        1024, ge=1, description="Rows per block read from a shard (bounds reader memory)."
    )
    row_group_rows: int = Field(
        50_000, ge=1, description="Rows buffered per output row group (large groups, few files)."
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to use; default: RAY_ADDRESS (set by `ray job submit`), "
        "else an embedded local Ray.",
    )
    status_every_seconds: float = Field(
        30.0, gt=0, description="Seconds between one-line progress reports in the log."
    )
    on_bad_file: Literal["fail", "skip"] = Field(
        "fail",
        description="A whole-file problem (corrupt Parquet, missing or non-string text column): "
        "fail the run, or skip the file and list it in _summary.json (a rerun retries it).",
    )
    on_too_long: Literal["reject", "truncate"] = Field(
        "reject",
        description="A prompt over the token budget: reject the row (too_long), or cut the text "
        "to fit.",
    )
    overwrite: bool = Field(
        False, description="Replace committed outputs (also those with another fingerprint)."
    )
    task_options: TaskOptions = Field(
        default_factory=TaskOptions, description="Options of the built-in tasks."
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Decoding settings."
    )

    @field_validator("task", mode="after")
    @classmethod
    def _one_task_is_a_name(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("no task given")
            return value[0] if len(value) == 1 else value
        return value

    @model_validator(mode="after")
    def _tasks_are_consistent(self) -> JobConfig:
        if self.tasks and "task" in self.model_fields_set:
            raise ValueError("give `task` or `tasks`, not both")
        specs = self.task_specs()
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"task names must be unique in a run, got {labels} (set `name:` in `tasks:`)")
        if len(specs) > 1 and self.adapter:
            raise ValueError("with several tasks, give each task its adapter in the spec's `tasks:` list")
        return self

    def task_specs(self) -> list[TaskSpec]:
        """The run's tasks: `tasks`, else one spec per `task` name."""
        if self.tasks:
            return list(self.tasks)
        names = self.task if isinstance(self.task, list) else [self.task]
        return [TaskSpec(task=n, adapter=self.adapter) for n in names]

    @property
    def multi_task(self) -> bool:
        return len(self.task_specs()) > 1

    def task_configs(self) -> dict[str, JobConfig]:
        """One single-task config per task, by label. A multi-task run writes each task to
        OUTPUT/<label>/ as a complete output of its own (manifests, rejects, report, _SUCCESS)."""
        specs = self.task_specs()
        if len(specs) == 1 and not self.tasks:
            return {specs[0].label: self}
        return {
            spec.label: self.model_copy(update={
                "task": spec.task,
                "tasks": [],
                "adapter": spec.adapter,
                "task_options": spec.task_options or self.task_options,
                "output": self.output if len(specs) == 1 else self.output.rstrip("/") + "/" + spec.label,
            })
            for spec in specs
        }

    @model_validator(mode="after")
    def _output_outside_input(self) -> JobConfig:
        # Compared as locations, not strings: `in` vs `./in/out`, `s3://b/in` vs `s3a://b/in/out`.
        if overlaps(self.input, self.output):
            raise ValueError(f"output {self.output!r} overlaps input {self.input!r}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: object) -> JobConfig:
        """Load a YAML job spec; `overrides` (e.g. from the CLI) win over the file."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a job spec must be a mapping, got {type(data).__name__}")
        return cls.model_validate(_deep_merge(data, overrides))


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
