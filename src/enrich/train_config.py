"""`enrich train` settings: one pydantic model drives the CLI flags, the run's digest and checks."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# What vLLM 0.32 loads (PATTERNS 4.3): only these may be in modules_to_save; r <= max_lora_rank.
VLLM_MODULES_TO_SAVE = frozenset({"classifier", "score"})


class TrainConfig(BaseModel):
    """Fine-tune a base model on a task's labelled rows; write a LoRA adapter or a full model."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("address", description="Task whose prompt and output schema the model learns.")
    data: str = Field(
        ...,
        description="Training data: an enrich output folder (its manifest-listed enriched rows are the "
        "labels; rejects and rows flagged by --flag-invalid are not), Parquet/JSONL files with the text and "
        "the task's fields, or chat JSONL (`messages`).",
    )
    keep_flagged: bool = Field(
        False, description="Also train on the rows of an enrich output that --flag-invalid flagged (they "
        "failed the task's checks). Off: flagged answers are no labels. For testing the loop with a "
        "teacher whose answers never pass, like a random-weight model.",
    )
    base: str = Field(..., description="Base model: hub id, local folder or s3:// prefix.")
    output: str = Field(..., description="Folder or s3:// prefix for the final model or adapter.")
    checkpoints: str | None = Field(
        None, description="Folder or s3:// prefix for Ray Train checkpoints (default: OUTPUT-checkpoints, beside "
        "the output so the model folder holds only the model)."
    )
    full: bool = Field(False, description="Train every weight and write a full model instead of a LoRA adapter.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    target_modules: str = Field(
        "all-linear", description="LoRA target modules: all-linear, or comma-separated names (q_proj,v_proj)."
    )
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training rows.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: run the epochs).")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (linear warm-up, then cosine).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(8, ge=1, description="Rows per device per step.")
    grad_accumulation: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    max_length: int = Field(
        2048, ge=64, description="Longest prompt + completion in tokens (the engine's max_model_len); "
        "longer rows are dropped, never truncated (a cut completion teaches unterminated JSON).",
    )
    seed: int = Field(0, description="Seed of shuffling, initialisation and the eval split.")
    eval_split: float = Field(0.02, ge=0, lt=0.5, description="Share of rows held out to report eval loss.")
    eval_steps: int = Field(200, ge=1, description="Optimizer steps between eval-loss reports and checkpoints.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    limit: int | None = Field(None, ge=1, description="Use only the first N rows of the data.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU, or CPU processes).")
    use_gpu: bool = Field(False, description="Give each worker a GPU.")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads per worker (default: torch's).")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Training dtype of the weights (float32 on CPU; bfloat16 on recent GPUs)."
    )
    s3_endpoint: str | None = Field(None, description="Endpoint URL for S3-compatible stores.")
    ray_address: str | None = Field(None, description="Ray cluster; default RAY_ADDRESS, else embedded Ray.")
    max_lora_rank: int = Field(16, ge=1, description="The serving engine's max_lora_rank: a larger r is refused.")

    @field_validator("data", "output", "checkpoints")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # Ray Train's workers run in their own working directory: a relative path would name another folder.
        return path if path is None or "://" in path else os.path.abspath(os.path.expanduser(path))

    @field_validator("base")
    @classmethod
    def _absolute_base(cls, base: str) -> str:
        # A local folder is made absolute like the other paths; anything else is a hub id or a URL.
        local = os.path.expanduser(base)
        return os.path.abspath(local) if "://" not in base and os.path.isdir(local) else base

    @model_validator(mode="after")
    def _servable(self) -> TrainConfig:
        if not self.full and self.lora_rank > self.max_lora_rank:
            raise ValueError(f"lora_rank {self.lora_rank} > the engine's max_lora_rank {self.max_lora_rank}: "
                             "vLLM would refuse the adapter")
        return self

    def targets(self) -> str | list[str]:
        names = [s.strip() for s in self.target_modules.split(",") if s.strip()]
        return "all-linear" if names == ["all-linear"] else names

    def digest(self, data_digest: str) -> str:
        """Names the Ray Train run: the same inputs resume it, a changed setting starts afresh.
        Fields that do not shape the weights (where to write, cluster wiring) are left out."""
        shaping = self.model_dump(exclude={"output", "checkpoints", "ray_address", "s3_endpoint", "torch_threads"})
        payload = json.dumps({**shaping, "data": data_digest}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
