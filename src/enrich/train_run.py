"""`enrich train`'s driver: Ray Train's TorchTrainer around train.train_loop, then the report.

The run is named by a digest of what shapes the weights (base, data files, every training
setting): a rerun of the same command finds the run's checkpoint_manager snapshot under the
checkpoint folder and resumes from its last checkpoint; a changed setting starts afresh.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from enrich.storage import filesystem, join
from enrich.train import HISTORY, train_loop
from enrich.train_config import TrainConfig
from enrich.train_data import data_digest

log = logging.getLogger("enrich.train")


def checkpoint_root(cfg: TrainConfig) -> str:
    return cfg.checkpoints or cfg.output.rstrip("/") + "-checkpoints"


def _storage(cfg: TrainConfig) -> tuple[str, Any]:
    """Ray's storage_path and filesystem: an absolute local path, or bucket/key on pyarrow's S3."""
    root = checkpoint_root(cfg)
    if "://" not in root:
        return os.path.abspath(root), None
    from pyarrow.fs import S3FileSystem

    fs = S3FileSystem(endpoint_override=cfg.s3_endpoint) if cfg.s3_endpoint else S3FileSystem()
    return root.split("://", 1)[1], fs


def run_name(cfg: TrainConfig) -> str:
    return "enrich-train-" + cfg.digest(data_digest(cfg.data, cfg.s3_endpoint))


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Train, publish to cfg.output, write the report; returns the training history."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
        # Workers import enrich from the same sources as the driver (a worktree's PYTHONPATH).
        env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        # "local": never attach to another job's embedded Ray on the same machine.
        ray.init(address=address or "local", runtime_env={"env_vars": env} if env else None)
    storage, fs = _storage(cfg)
    name = run_name(cfg)
    log.info("training run %s, checkpoints under %s", name, checkpoint_root(cfg))
    threads = cfg.torch_threads or 1
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg.model_dump()},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": threads}
        ),
        run_config=RunConfig(
            name=name, storage_path=storage, storage_filesystem=fs,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.save_total_limit),
            failure_config=FailureConfig(max_failures=1),
        ),
    )
    started = time.monotonic()
    trainer.fit()
    history = read_history(cfg)
    history["wall_seconds"] = time.monotonic() - started
    write_report(cfg, history)
    return history


def read_history(cfg: TrainConfig) -> dict[str, Any]:
    fs, path = filesystem(cfg.output, cfg.s3_endpoint)
    with fs.open(join(path, HISTORY), "r", encoding="utf-8") as fh:
        return json.load(fh)


def loss_curve_png(history: dict[str, Any]) -> bytes:
    from enrich.plots import _figure, _png

    logs = history.get("log_history", [])
    train = [(e["step"], e["loss"]) for e in logs if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in logs if "eval_loss" in e]
    fig = _figure()
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    if train or evals:
        ax.set_yscale("log")
        ax.legend()
    return _png(fig, ax, "Training loss (completion tokens only)", "optimizer step", "cross-entropy (log scale)",
                not (train or evals), "x")


def write_report(cfg: TrainConfig, history: dict[str, Any]) -> None:
    """OUTPUT/train_report.md and OUTPUT/loss.png."""
    logs = history.get("log_history", [])
    losses = [e["loss"] for e in logs if "loss" in e]
    evals = [e["eval_loss"] for e in logs if "eval_loss" in e]
    summary = next((e for e in reversed(logs) if "train_runtime" in e), {})
    lines = [
        f"# enrich train: {cfg.task} on {cfg.data}", "",
        f"- base `{cfg.base}`, {'full fine-tune' if cfg.full else f'LoRA r={cfg.lora_rank} alpha={cfg.lora_alpha} ({cfg.target_modules})'}",
        f"- {history['rows']} rows ({history['dropped']} over max_length dropped), "
        f"{history['tokens_per_row']:.0f} tokens per row, {history['global_step']} optimizer steps",
        f"- resumed from step {history['resumed_from_step']}" if history.get("resumed_from_step") else "- not resumed",
        f"- loss: first {losses[0]:.4f}, last {losses[-1]:.4f}" if losses else "- no loss logged",
        f"- eval loss: last {evals[-1]:.4f}" if evals else "- no eval split",
        f"- {summary.get('train_samples_per_second', float('nan')):.2f} rows/s over {summary.get('train_runtime', 0):.0f} s "
        f"of training ({history.get('wall_seconds', 0):.0f} s wall, with start-up)",
        "", "![loss](loss.png)", "",
    ]
    fs, path = filesystem(cfg.output, cfg.s3_endpoint)
    with fs.open(join(path, "loss.png"), "wb") as fh:
        fh.write(loss_curve_png(history))
    with fs.open(join(path, "train_report.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
