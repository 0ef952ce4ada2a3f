"""The whole job killed (driver, Ray, engines: SIGKILL to every process of its tree) mid-run
and mid-`--overwrite`, through the CLI with the real engine; then rerun. Every input row must
be exactly once among the manifest-listed files, at every point, and after _SUCCESS no part
file may be unlisted. Only processes this test started are killed (by pid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import enrich
from tests.helpers import synthetic_addresses

pytestmark = pytest.mark.slow
SHARDS, ROWS = 4, 16


def _inputs(folder: Path) -> int:
    folder.mkdir(parents=True)
    for s in range(SHARDS):
        lines = [json.dumps({"text": t}, ensure_ascii=False) for t in synthetic_addresses(ROWS, seed=s * ROWS)]
        (folder / f"part-{s}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SHARDS * ROWS


def _cmd(tmp_path: Path, model: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "enrich"), "run", "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"), "--model", str(model), "--batch-size", "8",
            "--row-group-rows", "8", "--gpu-memory-utilization", "0.1", "--max-model-len", "1024",
            "--flag-invalid",  # rows that finish stay enriched (flagged); cut-off ones are rejects
            # One batch in the engine at a time: shards finish batches apart, so a kill can land
            # between two commits (concurrent batches finish together). One attempt per row and a
            # short budget: decoding is not what this test is about, and it is most of its time.
            "--max-concurrent-batches", "1", "--max-attempts", "1", "--max-tokens", "64", *extra]


def _descendants(root: int) -> set[int]:
    """`root` and every process below it (walking /proc parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the job's whole tree at once (snapshot first, so nothing is re-parented away)."""
    tree = _descendants(proc.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in tree if p != proc.pid):
        time.sleep(0.2)


def _manifests(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "_manifests").glob("*.json")}


def _start_and_kill(cmd: list[str], out: Path, ready) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    _kill_tree(proc)


def _rerun(cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _check_rows_once(out: Path, rows_in: int) -> None:
    keys: list[tuple[str, int]] = []
    for rejects, cols in ((False, ["enrich_source_file", "enrich_row_index"]), (True, ["source_file", "row_index"])):
        ds = enrich.read_output(str(out), rejects=rejects)
        if ds.files:  # no file at all when every row went to the other table
            t = ds.to_table(columns=cols)
            keys += list(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
    assert len(keys) == len(set(keys)) == rows_in


def _check_clean(out: Path) -> None:
    listed = {f for m in _manifests(out).values() for f in m["files"] + m["reject_files"]}
    parts = {str(p.relative_to(out)) for p in out.rglob("part-*")}
    assert (out / "_SUCCESS").exists() and parts == listed


def test_job_killed_mid_run_and_mid_overwrite(tmp_path: Path, tiny_model: Path) -> None:
    rows_in = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    cmd = _cmd(tmp_path, tiny_model)

    # 1. Killed after its first commit: committed shards are whole, the rest absent.
    _start_and_kill(cmd, out, lambda: len(list((out / "_manifests").glob("*.json"))) >= 1)
    first = _manifests(out)
    assert 1 <= len(first) < SHARDS and not (out / "_SUCCESS").exists()
    assert all(m["rows_in"] == ROWS == m["rows_ok"] + m["rows_rejected"] for m in first.values())
    _rerun(cmd)
    _check_rows_once(out, rows_in)
    _check_clean(out)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["shards_skipped"] == len(first) and summary["invariant_ok"]

    # 2. --overwrite with a new fingerprint, killed after it replaced one shard: no row lost,
    #    the output is a mix of whole old and whole new shards, readable at once.
    before = {k: m["commit_id"] for k, m in _manifests(out).items()}
    overwrite = _cmd(tmp_path, tiny_model, "--overwrite", "--max-tokens", "48")
    replaced = lambda: sum(m["commit_id"] != before[k] for k, m in _manifests(out).items()) >= 1  # noqa: E731
    _start_and_kill(overwrite, out, replaced)
    mixed = _manifests(out)
    assert len(mixed) == SHARDS and len({m["fingerprint"] for m in mixed.values()}) == 2
    _check_rows_once(out, rows_in)  # the old files of unreplaced shards are all still there
    _rerun(overwrite)
    final = _manifests(out)
    assert len({m["fingerprint"] for m in final.values()}) == 1
    assert all(final[k]["commit_id"] != before[k] for k in before)
    _check_rows_once(out, rows_in)
    _check_clean(out)
