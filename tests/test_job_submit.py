"""`ray job submit` against a real two-node local Ray cluster (token auth on)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import psutil
import pytest

from enrich.engine_stage import RAY_CHILD_CLEANUP_ENV
from tests.conftest import REPO, free_port
from tests.helpers import check_every_row_once, read_output, synthetic_addresses

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _ray(env: dict[str, str], *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def local_cluster() -> Iterator[tuple[dict[str, str], str, str]]:
    """Head (1 CPU) + one worker node (1 CPU) on this machine; stopped afterwards."""
    # The raylets start with the settings cluster.yaml gives them (and the embedded Ray gets).
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           **RAY_CHILD_CLEANUP_ENV}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = free_port(), free_port()
    # The second node gets its own temp dir, as a second machine would: nodes sharing one
    # runtime_resources folder re-extract each other's working_dir under a running driver.
    worker_tmp = tempfile.mkdtemp(prefix="ray-node2-")
    try:
        _ray(env, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--num-cpus=1",
             "--include-dashboard=true", "--disable-usage-stats", f"--ray-client-server-port={free_port()}",
             *_agent_ports())
        _ray(env, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats",
             f"--temp-dir={worker_tmp}", *_agent_ports())
        yield env, f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{port}"
    finally:
        _stop_cluster(port, worker_tmp)
        shutil.rmtree(worker_tmp, ignore_errors=True)


def _agent_ports() -> list[str]:
    """Free ports for a node's agents. Ray's fixed defaults (e.g. the dashboard agent on 52365)
    are also taken by the embedded Ray of a test running beside this one; the head's job agent
    then never comes up ("No available agent to submit job")."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]


def _stop_cluster(gcs_port: int, worker_tmp: str) -> None:
    """Kill this cluster's processes and their children: its GCS, and every node process that
    names its GCS address (`--gcs-address=` or `--address=<node ip>:<port>`) or the second node's temp dir
    (workers, renamed "ray::...", are children of their raylet). Not `ray stop --force`: that
    stops every Ray on the machine, including the embedded Ray of a test running beside this one."""
    ours = re.compile(rf"--gcs[-_]server[-_]port={gcs_port}\b|--(gcs[-_])?address=\S+:{gcs_port}\b")

    def roots() -> list[psutil.Process]:
        return [proc for proc in psutil.process_iter(["cmdline"])
                if ours.search(cmdline := " ".join(proc.info["cmdline"] or [])) or worker_tmp in cmdline]

    doomed = {p.pid: p for root in roots() for p in [root, *_children(root)]}
    for proc in doomed.values():
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(list(doomed.values()), timeout=30)
    left = [proc.pid for proc in roots()] + [proc.pid for proc in alive]
    assert not left, f"processes of the test cluster survived its teardown: {left}"


def _submit_when_the_agent_is_up(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`ray job submit`, retried while the head's job agent is still starting (HTTP 500 "No
    available agent"): the nodes report their CPUs before the agent serves, more so under load."""
    deadline = time.time() + 120
    while True:
        proc = _ray(env, *args, check=False)
        if proc.returncode == 0 or "No available agent" not in proc.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, f"ray {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_job_submit_two_node_cluster(local_cluster: tuple[dict[str, str], str, str], tmp_path: Path, tiny_model: Path) -> None:
    env, dashboard, gcs = local_cluster
    deadline, status = time.time() + 90, ""
    while time.time() < deadline and "/2.0 CPU" not in status:  # both nodes joined
        status = _ray(env, "status", f"--address={gcs}", check=False).stdout
        time.sleep(2)
    assert "/2.0 CPU" in status, status
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    rows = [json.dumps({"id": f"r{i}", "text": t}, ensure_ascii=False) for i, t in enumerate(synthetic_addresses(16))]
    (inp / "a.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")

    submit = _submit_when_the_agent_is_up(
        env, "job", "submit", f"--address={dashboard}", f"--working-dir={REPO}", "--no-wait", "--",
        "python", "jobs/normalize_addresses.py", "--input", str(inp), "--output", str(out),
        "--model", str(tiny_model), "--id-column", "id", "--gpu-memory-utilization", "0.1",
        "--max-model-len", "1024", "--batch-size", "8",
    )
    job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submit.stdout + submit.stderr).group(0)
    deadline, state = time.time() + 600, ""
    while time.time() < deadline:
        proc = _ray(env, "job", "status", f"--address={dashboard}", job_id)
        state = (proc.stdout + proc.stderr).lower()  # "Job 'raysubmit_…' succeeded"
        if any(s in state for s in ("succeeded", "failed", "stopped")):
            break
        time.sleep(5)
    logs = _ray(env, "job", "logs", f"--address={dashboard}", job_id, check=False).stdout
    assert "succeeded" in state, f"{state}\n{logs[-5000:]}"
    assert "rows_in 16 = rows_ok" in logs  # the human summary printed by the job

    ok, bad, summary = read_output(fsspec.filesystem("file"), str(out))
    check_every_row_once(ok, bad, summary, 16)
    assert (out / "_SUCCESS").exists()


def test_job_without_token_is_refused(local_cluster: tuple[dict[str, str], str, str]) -> None:
    """Auth stays on: a client without RAY_AUTH_MODE=token cannot submit."""
    env, dashboard, _ = local_cluster
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    proc = _ray(no_token, "job", "list", f"--address={dashboard}", check=False, timeout=60)
    assert proc.returncode != 0
