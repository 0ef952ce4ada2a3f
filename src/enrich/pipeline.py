"""Pipeline: builds the Ray Data plan from a JobConfig and drives it. Nothing task-specific.

    read shards (+ an end-of-shard count) -> prepare prompts (one row per task) -> generate
    (actor pool, one vLLM engine each, shared by the tasks) -> validate + write attempt files
    (workers) -> descriptors -> commit per task and shard (driver: one manifest write)
    -> _summary.json, _report/ (from the manifests' counters), _SUCCESS per task
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
from enrich.commit import OutputCommitter, new_id
from enrich.config import JobConfig
from enrich.engine_ledger import ENGINE_STOP_TIMEOUT, engine_report, wait_for_engines_to_stop
from enrich.engine_stage import RAY_CHILD_CLEANUP_ENV, add_engine_stage, rows_per_block
from enrich.fanout import prepare_tasks
from enrich.sink import WriteTarget, descriptors, validate_and_write
from enrich.progress import ProgressReporter
from enrich.read import ShardInfo, discover_shards, passthrough_schema, read_shard
from enrich.lease import LeaseHeartbeat, put
from enrich.model_digest import model_digest
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
        "model_files": model_digest(cfg.model, cfg.s3_endpoint),
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
    # Embedded: vLLM's per-request INFO lines drown the job's own log unless asked for. The raylet
    # this init starts, and so every worker, inherits the environment: no runtime_env. Without it
    # and the dashboard, start-up was ~1.9 s shorter in bench/startup.py (3 repeats, spreads overlap).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for name, value in RAY_CHILD_CLEANUP_ENV.items():
        os.environ.setdefault(name, value)
    ray.init(address="local", include_dashboard=False)


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
    passthrough: pa.Schema | None = None, targets: dict[str, WriteTarget] | None = None, run_id: str = "run",
) -> Any:
    """The Ray Data plan. `needs`: source file -> tasks still to do (None: all tasks);
    `passthrough`: the run-wide schema of the input columns (read.passthrough_schema);
    `targets`: task label -> where its workers write (default: from the task configs)."""
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
        add_engine_stage(rows_per_block(prepared, cfg.engine.batch_size, prepare_args), cfg, engine_resources)
        # Validate and write in one step, in `row_group_rows`-row batches: a file per shard per
        # batch (not one tiny file per 64 KiB block), and rows never travel to the driver.
        .map_batches(
            validate_and_write, batch_format="pyarrow", batch_size=cfg.row_group_rows,
            fn_kwargs={"configs": configs, "targets": targets or write_targets(cfg), "run_id": run_id},
            num_cpus=STAGE_CPUS,
        )
    )


def write_targets(cfg: JobConfig) -> dict[str, WriteTarget]:
    out = {}
    for label, sub in cfg.task_configs().items():
        task = task_for(sub)
        lineage = Lineage(sub.model, sub.model_revision, sub.adapter, task.name, task.version, fingerprint(sub, task))
        out[label] = WriteTarget(sub.output, sub.s3_endpoint, lineage, tuple(arrow_schema(task.written_model).names))
    return out


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
    run_id = new_id()
    shards = discover_shards(cfg)
    outputs: dict[str, TaskOutput] = {}
    try:
        for label, sub in cfg.task_configs().items():
            outputs[label] = _task_output(sub, shards, run_id)
        with LeaseHeartbeat([out.committer.lease for out in outputs.values()]):
            return _run(cfg, shards, outputs, run_id, started)
    finally:  # a failed run hands its outputs back at once (a killed one: by pid or expiry)
        for out in outputs.values():
            try:
                out.committer.lease.release()
            except Exception:  # noqa: BLE001 - the failure being raised matters more
                log.warning("could not release the lease of %s", out.cfg.output, exc_info=True)


def _run(cfg: JobConfig, shards: list[ShardInfo], outputs: dict[str, TaskOutput], run_id: str,
         started: float) -> list[RunSummary]:
    needs: dict[str, list[str]] = {}
    for label, out in outputs.items():
        for shard in out.todo:
            needs.setdefault(shard.url, []).append(label)
    todo = [s for s in shards if s.url in needs]
    root_fs, root = filesystem(cfg.output, cfg.s3_endpoint)
    if cfg.multi_task and todo:
        remove(root_fs, join(root, "_SUCCESS"))
    engine_started = None
    engines: dict[str, Any] | None = None
    timeline: list[tuple[float, int, int]] = []
    if todo:
        init_ray(cfg)
        targets = {label: WriteTarget(out.cfg.output, out.cfg.s3_endpoint, out.lineage, tuple(out.output_names))
                   for label, out in outputs.items()}
        # Over every listed shard, not just those to do: a resumed run writes the same schema.
        ds = build_dataset(cfg, todo, needs if cfg.multi_task else None, passthrough_schema(shards, cfg), targets, run_id)
        total = sum(s.size for out in outputs.values() for s in out.todo)
        progress = ProgressReporter(total, sum(len(out.todo) for out in outputs.values()), cfg.status_every_seconds)
        committers = [out.committer for out in outputs.values()]
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            engine_started = engine_started or time.time()
            for d in descriptors(_as_table(batch)):
                outputs[d.task].committer.add(d)
                q = d.quality
                progress.add_counts(q.rows_ok + q.rows_rejected, q.rows_rejected, q.output_tokens_sum)
            progress.maybe_log(sum(c.done_bytes() for c in committers), sum(len(c.committed) for c in committers))
        timeline = progress.timeline.points
        if not wait_for_engines_to_stop():
            log.warning("an engine did not report its shutdown within %.0f s; ending the run anyway",
                        ENGINE_STOP_TIMEOUT)
        engines = engine_report()
    summaries = [_finish(out, started, engine_started, timeline, engines) for out in outputs.values()]
    if cfg.multi_task:  # the run's own record: each task's summary; _SUCCESS when all are done
        by_task = {label: s.model_dump(mode="json") for label, s in zip(outputs, summaries)}
        put(root_fs, join(root, "_summary.json"), json.dumps({"tasks": by_task}, indent=2).encode("utf-8"))
        put(root_fs, join(root, "_SUCCESS"), b"")
    return summaries


def _task_output(cfg: JobConfig, shards: list[ShardInfo], run_id: str) -> TaskOutput:
    task = task_for(cfg)
    lineage = Lineage(cfg.model, cfg.model_revision, cfg.adapter, task.name, task.version, fingerprint(cfg, task))
    output_names = list(arrow_schema(task.written_model).names)
    committer = OutputCommitter(cfg, lineage, output_names, run_id=run_id)
    todo = committer.plan(shards)
    log.info("task %s: %d shards, %d to process, %d already done", task.name, len(shards), len(todo),
             len(committer.skipped))
    return TaskOutput(cfg, lineage, output_names, committer, todo)


def _finish(
    out: TaskOutput, started: float, engine_started: float | None, timeline: list,
    engines: dict[str, Any] | None = None,
) -> RunSummary:
    """Commit the task's last shards (or fail naming the incomplete ones); _summary.json and
    the run report from the manifests' counters, then _SUCCESS."""
    committer = out.committer
    committer.finish()
    summary = build_summary(out.cfg, out.lineage, committer, started, engine_started)
    summary.engines = engines
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
            f"row count invariant broken: rows_in {summary.rows_in} (reader) != "
            f"rows_ok {summary.rows_ok} + rows_rejected {summary.rows_rejected} (written files)"
        )
    committer.mark_success()
    return summary


def _as_table(batch: Any) -> pa.Table:
    return batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
