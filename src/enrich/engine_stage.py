"""How the pipeline feeds the engine stage: the actor pool's arguments, blocks of batch_size
rows, and the Ray settings that keep an engine's processes from outliving its actor."""

from __future__ import annotations

import warnings
from typing import Any

from enrich.config import JobConfig
from enrich.engine_ledger import start_ledger
from enrich.generate import EngineActor

# Ray's raylet kills a worker's whole process group when the worker dies, also under SIGKILL:
# vLLM's EngineCore and workers are children of the engine actor, in its process group.
# (Read by the raylet at start: set before an embedded `ray.init`, and in the cluster's env.)
RAY_CHILD_CLEANUP_ENV = {
    "RAY_process_group_cleanup_enabled": "1",
    # Ray's other cleanup SIGKILLs a worker's children as soon as it starts to exit, before
    # the actor's __del__ has shut its engine down: multiprocessing's resource tracker dies
    # first and vLLM's shutdown prints KeyError tracebacks. The process group (above) and
    # engine_reaper still reap whatever an actor leaves behind.
    "RAY_kill_child_processes_on_worker_exit": "0",
}


def add_engine_stage(ds: Any, cfg: JobConfig, resources: dict[str, Any], **constructor_kwargs: Any) -> Any:
    """`ds` followed by the engine stage (`EngineActor` actors), with the run's ledger and the
    start-up failure budget. `constructor_kwargs`: extra `EngineActor` arguments (tests: backend)."""
    set_start_failure_budget(ds.context, cfg)
    args = engine_stage_args(cfg, resources)
    args["fn_constructor_kwargs"].update(constructor_kwargs)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates free-form remote args, but max_restarts and max_task_retries
        # have no named parameter yet: the warning would print at every run, with nothing to do.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(EngineActor, **args)


def set_start_failure_budget(ctx: Any, cfg: JobConfig) -> None:
    """An engine actor whose setup fails (or whose process dies in it) is replaced by a fresh
    one until `max_start_failures` failed in a row (Ray Data resets its count when one starts);
    then the run fails with the last engine's error.

    `ctx` must be the DataContext of the dataset that runs: every Dataset keeps a deep copy of
    `DataContext.get_current()` taken when its source was created (`ray.data.from_items` ...),
    and Ray Data's actor pool reads the budget from that copy. Setting the current context
    after the source exists changes nothing (the budget stayed at Ray's default 0: one failed
    start failed the run)."""
    ctx.max_consecutive_actor_init_deaths = cfg.engine.max_start_failures - 1


def engine_stage_args(cfg: JobConfig, resources: dict[str, Any]) -> dict[str, Any]:
    """`map_batches` arguments of the engine stage (`EngineActor`), with the run's ledger.
    (The start-up failure budget lives on the dataset's context: `add_engine_stage`.)"""
    import ray

    e = cfg.engine
    ledger = start_ledger(e.max_engine_deaths_per_hour)
    in_flight = e.batches_in_flight()
    return {
        "fn_constructor_kwargs": {"cfg": cfg, "ledger": ledger},
        "batch_size": e.batch_size,
        "batch_format": "pyarrow",
        # max_concurrent_calls_per_actor becomes the actor's max_concurrency: that many batches
        # run at once on the actor's async engine, and no more are queued at it. A queue there
        # (Ray Data's default: twice as many) only holds rows another engine could run: the first
        # engine up took all 7 blocks of a 400-row input while the second sat idle (bench, 2026-12-06).
        "compute": ray.data.ActorPoolStrategy(
            size=e.num_engines,
            max_concurrent_calls_per_actor=in_flight,
            max_tasks_in_flight_per_actor=in_flight,
        ),
        # A dead engine exits its actor; Ray restarts it and re-runs its batches, without limit:
        # the run's ledger enforces the error budget. (Distinct remote args also keep reading
        # and prompt rendering out of the engine actors: Ray Data does not fuse them in.)
        "max_restarts": -1,
        "max_task_retries": -1,
        **resources,
    }


def rows_per_block(ds: Any, rows: int, upstream_remote_args: dict[str, Any]) -> Any:
    """`ds` with blocks of `rows` rows (the engine's batch_size), so a batch never splits as
    64 + 16 the way ~80-row 64 KiB blocks did.

    This is Ray's streaming repartition (`ds.repartition(target_num_rows_per_block=rows)`), given
    the remote args of the stage before it. The public call gives it `num_cpus=1`, which differs
    from that stage's 0.25, so Ray Data runs it as a stage of its own that needs a whole free CPU;
    with two engines holding 1.5 of 2 CPUs it never starts (the deadlock seen before). With equal
    args Ray Data fuses it into the stage before it (MapBatches -> StreamingRepartition, non-strict):
    no extra task, no extra CPU, the rows are sliced as they are produced.
    """
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import StreamingRepartition
    from ray.data.dataset import Dataset

    op = StreamingRepartition(
        target_num_rows_per_block=rows,
        input_dependencies=[ds._logical_plan.dag],
        ray_remote_args=dict(upstream_remote_args),
    )
    return Dataset._from_parent(ds, LogicalPlan(op, ds.context))
