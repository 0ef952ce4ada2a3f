"""Real faults: an engine actor killed mid-run, the driver killed and re-run, a model that
cannot load. Every row must still land exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest
from ray.exceptions import ActorDiedError

from enrich.config import JobConfig
from enrich.engine_ledger import KILLED, engine_report, run_ledger
from enrich.engine_reaper import _start_time, descendants
from enrich.pipeline import run
from tests.helpers import check_every_row_once, read_output, row_keys, synthetic_addresses

pytestmark = pytest.mark.slow

ENGINE = {"gpu_memory_utilization": 0.1, "batch_size": 8, "max_model_len": 1024}


def write_shards(folder: Path, shards: int, rows: int) -> int:
    folder.mkdir(parents=True)
    for s in range(shards):
        texts = synthetic_addresses(rows, seed=s * rows)
        lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
        (folder / f"part-{s}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return shards * rows


def engine_actor_pids(root: int) -> list[int]:
    """The engine actors below `root` (this job's driver): Ray titles them
    ray::MapWorker(...EngineActor). Only this job's: another job on the machine is not ours."""
    return [pid for pid in descendants(root) if "EngineActor" in (c := _cmdline(pid)) and "MapWorker" in c]


def engine_processes(actor_pids: list[int]) -> dict[int, str]:
    """The engine processes (EngineCore, workers) under the given actors; the reaper excluded."""
    found: dict[int, str] = {}
    for pid in actor_pids:
        found.update(descendants(pid))
    return {p: t for p, t in found.items() if "enrich.engine_reaper" not in _cmdline(p)}


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _alive(procs: dict[int, str]) -> list[int]:
    return [pid for pid, started in procs.items() if _start_time(pid) == started]


def test_engine_actor_killed_mid_run(tmp_path: Path, tiny_model: Path) -> None:
    """SIGKILL an engine actor while it runs batches: its engine processes are gone within 10 s,
    the restarted engine starts and re-runs the cut batches, every row lands exactly once."""
    rows_in = write_shards(tmp_path / "in", shards=4, rows=16)
    out = tmp_path / "out"
    cfg = JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(out), "model": str(tiny_model),
         # Write batches of one engine batch, so a shard commits while others still run.
         "row_group_rows": 8, "engine": {**ENGINE, "max_concurrent_batches": 2}, "sampling": {"max_attempts": 1, "max_tokens": 64}}
    )
    import ray

    killed: list[int] = []
    leaked: list[list[int]] = []
    finished = threading.Event()

    def kill_while_running() -> None:
        # Stops when the run ends: a ledger call after ray.shutdown would start a new Ray.
        while not finished.is_set() and not killed:
            ledger = run_ledger()
            if ledger is not None and ray.is_initialized() and list((out / "_manifests").glob("*.json")) \
                    and ray.get(ledger.open_batches.remote()):
                actors = engine_actor_pids(os.getpid())
                engine = engine_processes(actors)
                for pid in actors:
                    os.kill(pid, signal.SIGKILL)  # a real crash: no cleanup, no exception
                    killed.append(pid)
                gone_by = time.time() + 10
                while time.time() < gone_by and _alive(engine):
                    time.sleep(0.2)
                leaked.append(_alive(engine) if engine else [-1])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_while_running, daemon=True)
    killer.start()
    try:
        summary = run(cfg)
    finally:
        finished.set()
    report = engine_report()
    killer.join(timeout=15)
    assert killed, "the engine actor was never killed while running a batch"
    assert leaked == [[]], f"engine processes outlived their actor by 10 s: {leaked}"
    assert report is not None
    assert report["restarts"] >= 1 and report["rerun_batches"] >= 1, report
    assert KILLED in report["death_causes"]
    assert summary.shards_processed == 4
    ok, bad, written = read_output(fsspec.filesystem("file"), str(out))
    check_every_row_once(ok, bad, written, rows_in)
    assert set(engine_actor_pids(os.getpid())).isdisjoint(killed)


def test_driver_killed_then_rerun(tmp_path: Path, tiny_model: Path) -> None:
    """SIGKILL the driver's process group once some shards are committed: the rerun skips
    them (their manifests untouched), redoes the rest, every row lands exactly once and after
    _SUCCESS no part file is unlisted (the dead run's attempt files are gone)."""
    shards = 4
    rows_in = write_shards(tmp_path / "in", shards=shards, rows=16)
    out = tmp_path / "out"
    cmd = [
        str(Path(sys.executable).parent / "enrich"), "run", "--input", str(tmp_path / "in"),
        "--output", str(out), "--model", str(tiny_model), "--batch-size", "8",
        "--gpu-memory-utilization", "0.1", "--max-model-len", "1024",
        # Write batches of one engine batch: shards commit as they finish (the default batch,
        # 50,000 rows, holds all 64 rows until the end). One batch at a time in the engine,
        # so shards finish batches apart and the kill lands between commits.
        "--row-group-rows", "8", "--max-concurrent-batches", "1", "--max-attempts", "1", "--max-tokens", "64",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    first = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and not list((out / "_manifests").glob("*.json")):
        assert first.poll() is None, "the first run ended before it could be killed"
        time.sleep(0.2)
    engine = engine_processes(engine_actor_pids(first.pid))
    assert engine, "no engine process found to watch"
    job_tree = descendants(first.pid)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything in its process group
    first.wait(timeout=30)
    gone_by = time.time() + 10
    while time.time() < gone_by and _alive(engine):
        time.sleep(0.2)
    assert _alive(engine) == [], "engine processes outlived the killed driver by 10 s"
    _stop_orphans(job_tree)
    before = _manifests(out)
    assert 1 <= len(before) < shards, f"{len(before)} of {shards} shards committed before the kill"
    assert not (out / "_SUCCESS").exists()

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    ok, bad, written = read_output(fsspec.filesystem("file"), str(out))
    after = _manifests(out)
    assert written["shards_skipped"] == len(before)
    assert len(after) == shards
    # Skipped, not redone: the first run's commits are the same commits.
    assert {k: after[k]["commit_id"] for k in before} == {k: m["commit_id"] for k, m in before.items()}
    assert written["output_rows_ok"] + written["output_rows_rejected"] == rows_in
    # Across both runs: every input row exactly once, no duplicates, no gaps.
    keys = row_keys(ok, bad)
    assert len(keys) == len(set(keys)) == rows_in
    assert (out / "_SUCCESS").exists() and not (out / "_staging").exists()
    listed = {f for m in after.values() for f in m["files"] + m["reject_files"]}
    assert {str(p.relative_to(out)) for p in out.rglob("part-*")} == listed


def _manifests(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "_manifests").glob("*.json")}


def _stop_orphans(job_tree: dict[int, str]) -> None:
    """A SIGKILLed driver cannot stop the Ray it embedded (Ray's daemons run in sessions of
    their own): kill what is left of that job's tree, by pid and start time. Not `ray stop`,
    which would stop every Ray on the machine."""
    for pid in _alive(job_tree):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_engine_that_cannot_start_fails_fast(tmp_path: Path, tiny_model: Path) -> None:
    """Corrupt weights: the job fails with the engine's cause in well under a minute of
    retries, instead of restarting the engine forever."""
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    write_shards(tmp_path / "in", shards=1, rows=4)
    cfg = JobConfig.model_validate(
        {"input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "model": str(broken), "engine": ENGINE}
    )
    assert cfg.engine.max_start_failures == 3  # the default budget
    started = time.time()
    with pytest.raises(ActorDiedError) as failure:  # Ray Data re-raises the last engine's setup error
        run(cfg)
    assert time.time() - started < 240
    # Three engine actors tried to start (Ray Data replaced the first two), none started.
    report = engine_report()
    assert report is not None
    assert report["start_failures"] == 3 and report["engines"] == {}
    # The cause, named: vLLM reads the corrupt safetensors header's length and runs out of memory.
    cause = "MemoryError: raised in parse_safetensors_file_metadata (utils.py)"
    assert report["start_failure_causes"] == [cause]
    assert failure.value.actor_init_failed
    message = str(failure.value)
    assert message.startswith("The actor died because of an error raised in its creation task")
    raised = [line.strip() for line in message.splitlines() if "EngineStartError" in line]
    assert raised[-1] == f"enrich.generate.EngineStartError: engine failed to start: {cause}"
    assert not (tmp_path / "out" / "_SUCCESS").exists()
