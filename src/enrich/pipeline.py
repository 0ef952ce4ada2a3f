"""Pipeline: builds the Ray Data plan from a JobConfig and drives it. Nothing task-specific.

    read shards -> prepare prompts -> generate (actor pool, one vLLM engine each)
    -> validate -> commit per shard (driver) -> _summary.json, _SUCCESS
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import pyarrow as pa

from enrich.arrow_types import arrow_schema
from enrich.commit import OutputCommitter
from enrich.config import JobConfig
from enrich.generate import EngineActor
from enrich.prepare import prepare_batch
from enrich.progress import ProgressReporter
from enrich.read import ShardInfo, discover_shards, read_shard
from enrich.summary import RunSummary, build_summary
from enrich.tasks import Task, task_for
from enrich.validate import validate_batch
from enrich.write import Lineage

log = logging.getLogger(__name__)

MAX_ENGINE_RESTARTS = 3


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
    ray.init(address="local", runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": level}})


def gpus_per_engine(cfg: JobConfig) -> float:
    """GPUs per actor: as configured, else decided by the cluster (CPU vs GPU is not a code fork)."""
    import ray

    if cfg.engine.gpus_per_engine is not None:
        return cfg.engine.gpus_per_engine
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return float(cfg.engine.tensor_parallel_size) if has_gpu else 0.0


def _read_shards(batch: dict[str, Any], cfg: JobConfig) -> Any:
    for url, fmt, size, version in zip(batch["url"], batch["format"], batch["size"], batch["version"]):
        yield from read_shard(ShardInfo(str(url), str(fmt), int(size), str(version)), cfg)


def build_dataset(cfg: JobConfig, shards: list[ShardInfo]) -> Any:
    import ray

    items = [{"url": s.url, "format": s.format, "size": s.size, "version": s.version} for s in shards]
    gpus = gpus_per_engine(cfg)
    engine_resources: dict[str, Any] = {"num_gpus": gpus} if gpus else {"num_cpus": cfg.engine.cpus_per_engine}
    return (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(_read_shards, batch_size=1, batch_format="numpy", fn_kwargs={"cfg": cfg})
        .map_batches(prepare_batch, batch_format="pyarrow", fn_kwargs={"cfg": cfg})
        .map_batches(
            EngineActor,
            fn_constructor_kwargs={"cfg": cfg},
            batch_size=cfg.engine.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.engine.num_engines),
            # A dead engine: restart the actor and re-run its batch, a bounded number of times.
            # (Also keeps reading and prompt rendering out of the engine actors: distinct
            # remote args stop Ray Data from fusing those stages into them.)
            max_restarts=MAX_ENGINE_RESTARTS,
            max_task_retries=MAX_ENGINE_RESTARTS,
            **engine_resources,
        )
        .map_batches(validate_batch, batch_format="pyarrow", fn_kwargs={"cfg": cfg})
    )


def run(cfg: JobConfig) -> RunSummary:
    """Run one job to completion; returns its summary (also written as _summary.json)."""
    started = time.time()
    task = task_for(cfg)
    lineage = Lineage(
        cfg.model, cfg.model_revision, cfg.adapter, task.name, task.version, fingerprint(cfg, task)
    )
    output_names = list(arrow_schema(task.written_model).names)
    shards = discover_shards(cfg)
    committer = OutputCommitter(cfg, lineage, output_names)
    todo = committer.plan(shards)
    log.info("%d shards: %d to process, %d already done", len(shards), len(todo), len(committer.skipped))
    engine_started = None
    if todo:
        init_ray(cfg)
        ds = build_dataset(cfg, todo)
        progress = ProgressReporter(sum(s.size for s in todo), len(todo), cfg.status_every_seconds)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            engine_started = engine_started or time.time()
            table = _as_table(batch)
            committer.add(table)
            progress.add(table)
            progress.maybe_log(committer.done_bytes(), len(committer.committed))
    committer.finish()
    summary = build_summary(cfg, lineage, committer, started, engine_started)
    committer.write_text("_summary.json", summary.model_dump_json(indent=2))
    try:
        from enrich.report import write_run_report

        manifests = committer.committed + committer.skipped
        write_run_report(committer.fs, committer.root, summary, manifests, output_names)
    except Exception:  # noqa: BLE001 - a report failure must not fail a committed run
        log.warning("run report not written", exc_info=True)
    if not summary.invariant_ok:
        raise RuntimeError(
            f"row count invariant broken: rows_in {summary.rows_in} != "
            f"rows_ok {summary.rows_ok} + rows_rejected {summary.rows_rejected}"
        )
    committer.mark_success()
    return summary


def _as_table(batch: Any) -> pa.Table:
    return batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
