"""Pipeline: builds the Ray Data plan from a JobConfig and drives it. Nothing task-specific.

    read shards -> prepare prompts (one row per task) -> generate (actor pool, one vLLM
    engine each, shared by the tasks) -> validate -> commit per task and shard (driver)
    -> _summary.json, _report/, _SUCCESS per task
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from enrich.arrow_types import arrow_schema
from enrich.commit import OutputCommitter
from enrich.config import JobConfig
from enrich.engine_stage import RAY_CHILD_CLEANUP_ENV, engine_stage_args, rows_per_block
from enrich.generate import EngineActor
from enrich.fanout import prepare_tasks, split_by_task, validate_tasks
from enrich.progress import ProgressReporter
from enrich.read import ShardInfo, discover_shards, passthrough_schema, read_shard
from enrich.storage import filesystem, join, remove
from enrich.summary import RunSummary, build_summary
from enrich.tasks import Task, task_for
from enrich.write import Lineage

log = logging.getLogger(__name__)

# Ray Data merges a task's outputs into blocks of up to 128 MiB: a whole shard would be one
# block, which one engine takes while the others idle and nothing reaches the writer until
# it is done. Small blocks (tens of rows) spread a shard over the engines; the engine stage
# bundles them back into batches of `batch_size` rows.
BLOCK_BYTES = 64 * 1024
# Ray CPUs each read/prepare/validate task reserves: they are light next to the engines, and a
# whole CPU each would leave none free once engines hold a node's cores (the job would wait).
STAGE_CPUS = 0.25
# Memory the read/prepare tasks declare: each holds a tokenizer (about 0.7 GiB for Qwen's
# 151k-token vocabulary). Declared, Ray places no more of them on a node than it can hold,
# and Ray Data stops warning on every status tick that the stage requests none.
PREPARE_MEMORY = 1 << 30


def fingerprint(cfg: JobConfig, task: Task) -> str:
    """What decides the outputs: model, task spec (prompt, schema), sampling, context length."""
    payload = {
        "model": cfg.model,
        "revision": cfg.model_revision,
        "adapter": cfg.adapter,
        "task": task.spec_digest(),
        "sampling": cfg.sampling.model_dump(),
        "max_model_len": cfg.engine.max_model_len,
        "seed": cfg.engine.seed,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]


def init_ray(cfg: JobConfig) -> None:
    """Connect to the cluster we were submitted to (RAY_ADDRESS), else start an embedded Ray."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    # Embedded: vLLM's per-request INFO lines drown the job's own log unless asked for.
    level = os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")
    for name, value in RAY_CHILD_CLEANUP_ENV.items():  # read by the raylet this init starts
        os.environ.setdefault(name, value)
    ray.init(address="local", runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": level}})


def gpus_per_engine(cfg: JobConfig) -> float:
    """GPUs per actor: as configured, else decided by the cluster (CPU vs GPU is not a code fork)."""
    import ray

    if cfg.engine.gpus_per_engine is not None:
        return cfg.engine.gpus_per_engine
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return float(cfg.engine.tensor_parallel_size) if has_gpu else 0.0


def _read_shards(batch: dict[str, Any], cfg: JobConfig, passthrough: pa.Schema | None = None) -> Any:
    for url, fmt, size, version in zip(batch["url"], batch["format"], batch["size"], batch["version"]):
        yield from read_shard(ShardInfo(str(url), str(fmt), int(size), str(version)), cfg, passthrough)


def build_dataset(
    cfg: JobConfig, shards: list[ShardInfo], needs: dict[str, list[str]] | None = None,
    passthrough: pa.Schema | None = None,
) -> Any:
    """The Ray Data plan. `needs`: source file -> tasks still to do (None: all tasks);
    `passthrough`: the run-wide schema of the input columns (read.passthrough_schema)."""
    import ray

    ray.data.DataContext.get_current().target_max_block_size = BLOCK_BYTES
    items = [{"url": s.url, "format": s.format, "size": s.size, "version": s.version} for s in shards]
    configs = cfg.task_configs()  # label -> task config, shipped to the stages once
    gpus = gpus_per_engine(cfg)
    engine_resources: dict[str, Any] = {"num_gpus": gpus} if gpus else {"num_cpus": cfg.engine.cpus_per_engine}
    prepare_args = {"num_cpus": STAGE_CPUS, "memory": PREPARE_MEMORY}
    prepared = (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            _read_shards, batch_size=1, batch_format="numpy", fn_kwargs={"cfg": cfg, "passthrough": passthrough},
            num_cpus=STAGE_CPUS, memory=PREPARE_MEMORY,
        )
        .map_batches(
            prepare_tasks, batch_format="pyarrow", fn_kwargs={"configs": configs, "needs": needs},
            **prepare_args,
        )
    )
    return (
        rows_per_block(prepared, cfg.engine.batch_size, prepare_args)
        .map_batches(EngineActor, **engine_stage_args(cfg, engine_resources))
        .map_batches(validate_tasks, batch_format="pyarrow", fn_kwargs={"configs": configs}, num_cpus=STAGE_CPUS)
    )


@dataclass
class TaskOutput:
    """One task's side of a run: its config, lineage and committer (its output folder)."""

    cfg: JobConfig
    lineage: Lineage
    output_names: list[str]
    committer: OutputCommitter
    todo: list[ShardInfo]


def run(cfg: JobConfig) -> RunSummary:
    """Run a single-task job to completion; returns its summary (also in _summary.json)."""
    if cfg.multi_task:
        raise ValueError("several tasks: use run_tasks(), which returns one summary per task")
    return run_tasks(cfg)[0]


def run_tasks(cfg: JobConfig) -> list[RunSummary]:
    """Run a job of one or more tasks; one pass over the input, one summary per task."""
    started = time.time()
    shards = discover_shards(cfg)
    outputs = {label: _task_output(sub, shards) for label, sub in cfg.task_configs().items()}
    needs: dict[str, list[str]] = {}
    for label, out in outputs.items():
        for shard in out.todo:
            needs.setdefault(shard.url, []).append(label)
    todo = [s for s in shards if s.url in needs]
    root_fs, root = filesystem(cfg.output, cfg.s3_endpoint)
    if cfg.multi_task and todo:
        remove(root_fs, join(root, "_SUCCESS"))
    engine_started = None
    timeline: list[tuple[float, int, int]] = []
    if todo:
        init_ray(cfg)
        # Over every listed shard, not just those to do: a resumed run writes the same schema.
        ds = build_dataset(cfg, todo, needs if cfg.multi_task else None, passthrough_schema(shards, cfg))
        total = sum(s.size for out in outputs.values() for s in out.todo)
        progress = ProgressReporter(total, sum(len(out.todo) for out in outputs.values()), cfg.status_every_seconds)
        labels = list(outputs)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            engine_started = engine_started or time.time()
            table = _as_table(batch)
            for label, rows in split_by_task(table, labels):
                outputs[label].committer.add(_own_columns(rows, label, outputs))
            progress.add(table)
            committers = [out.committer for out in outputs.values()]
            progress.maybe_log(sum(c.done_bytes() for c in committers), sum(len(c.committed) for c in committers))
        timeline = progress.timeline.points
    summaries = [_finish(out, started, engine_started, timeline) for out in outputs.values()]
    if cfg.multi_task:  # the run's own record: each task's summary; _SUCCESS when all are done
        by_task = {label: s.model_dump(mode="json") for label, s in zip(outputs, summaries)}
        root_fs.pipe_file(join(root, "_summary.json"), json.dumps({"tasks": by_task}, indent=2).encode("utf-8"))
        root_fs.pipe_file(join(root, "_SUCCESS"), b"")
    return summaries


def _task_output(cfg: JobConfig, shards: list[ShardInfo]) -> TaskOutput:
    task = task_for(cfg)
    lineage = Lineage(cfg.model, cfg.model_revision, cfg.adapter, task.name, task.version, fingerprint(cfg, task))
    output_names = list(arrow_schema(task.written_model).names)
    committer = OutputCommitter(cfg, lineage, output_names)
    todo = committer.plan(shards)
    log.info("task %s: %d shards, %d to process, %d already done", task.name, len(shards), len(todo),
             len(committer.skipped))
    return TaskOutput(cfg, lineage, output_names, committer, todo)


def _own_columns(rows: pa.Table, label: str, outputs: dict[str, TaskOutput]) -> pa.Table:
    """Drop the other tasks' output columns (null here) that a mixed batch may carry."""
    own = set(outputs[label].output_names)
    foreign = {n for other, out in outputs.items() if other != label for n in out.output_names} - own
    return rows.drop_columns([n for n in rows.column_names if n in foreign])


def _finish(out: TaskOutput, started: float, engine_started: float | None, timeline: list) -> RunSummary:
    """Commit the task's last shards; _summary.json, the run report, then _SUCCESS."""
    committer = out.committer
    committer.finish()
    summary = build_summary(out.cfg, out.lineage, committer, started, engine_started)
    try:
        from enrich.report import SUMMARY_QUALITY, write_run_report

        manifests = committer.committed + committer.skipped
        q = write_run_report(committer.fs, committer.root, summary, manifests, out.output_names, timeline=timeline)
        summary.quality = {k: q[k] for k in SUMMARY_QUALITY}
    except Exception:  # noqa: BLE001 - a report failure must not fail a committed run
        log.warning("run report not written", exc_info=True)
    committer.write_text("_summary.json", summary.model_dump_json(indent=2))
    if not summary.invariant_ok:
        raise RuntimeError(
            f"row count invariant broken: rows_in {summary.rows_in} != "
            f"rows_ok {summary.rows_ok} + rows_rejected {summary.rows_rejected}"
        )
    committer.mark_success()
    return summary


def _as_table(batch: Any) -> pa.Table:
    return batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
