"""Expected failures end in one line, `enrich: error: <message>`, and a distinct status:
2 for a configuration or input error found before any work, 1 for a run that failed.
One test per class of error, through the `enrich` command (a subprocess) or main()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enrich.cli import main
from enrich.config import JobConfig
from enrich.read import discover_shards
from enrich.write import ShardManifest
from tests.conftest import REPO

HUB_ID = "Qwen/Qwen3-0.6B"  # a hub id: not looked up before the run (no hub access needed here)


def enrich(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`enrich ...` as a user runs it: its own process, its stderr and exit status."""
    return subprocess.run(
        [sys.executable, "-m", "enrich.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )


def one_error_line(stderr: str) -> str:
    """stderr's only line, which must be the error line."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("enrich: error: "), stderr
    return lines[0]


def jsonl_input(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "浙江省杭州市西湖区文三路1号"}\n', encoding="utf-8")
    return folder


# ---------------------------------------------------------------- 2: before any work
def test_unknown_flag(tmp_path: Path) -> None:
    result = enrich("run", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--model", HUB_ID, "--bogus")
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "enrich: error: unrecognized arguments: --bogus (see `enrich --help`)"
    assert result.stdout == ""


def test_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--input", "i", "--output", "o", "--model", HUB_ID, "--batch-size", "eight"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == "enrich: error: argument --batch-size: invalid int value: 'eight' (see `enrich run --help`)"


def test_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("input: /data/in\noutput: /data/out\nmodel: m\nengine:\n  batch_size: 0\n", encoding="utf-8")
    assert main(["run", "--spec", str(spec)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == ("enrich: error: invalid configuration: --batch-size (engine.batch_size): "
                    "Input should be greater than or equal to 1")


def test_missing_input(tmp_path: Path) -> None:
    """The issue's example: no traceback, the path and the reason."""
    result = enrich("run", "--input", "/nonexistent", "--output", str(tmp_path / "o"), "--model", HUB_ID)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "enrich: error: /nonexistent: no such file or folder"


def test_output_inside_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = jsonl_input(tmp_path)
    assert main(["run", "--input", str(inp), "--output", f"{inp}/out", "--model", HUB_ID]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"enrich: error: invalid configuration: output '{inp}/out' overlaps input '{inp}'"


def test_fingerprint_mismatch_without_overwrite(tmp_path: Path) -> None:
    """The output holds a shard committed with another fingerprint (another model, say)."""
    inp, out = jsonl_input(tmp_path), tmp_path / "out"
    (shard,) = discover_shards(JobConfig(input=str(inp), output=str(out), model=HUB_ID))
    manifest = ShardManifest(shard_id=shard.shard_id, source=shard.url, size=shard.size, version=shard.version,
                             fingerprint="0123456789abcdef", rows_in=1, rows_ok=1, rows_rejected=0)
    (out / "_manifests").mkdir(parents=True)
    (out / "_manifests" / f"{shard.shard_id}.json").write_text(manifest.model_dump_json(), encoding="utf-8")
    result = enrich("run", "--input", str(inp), "--output", str(out), "--model", HUB_ID)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"enrich: error: {out} holds {shard.url} made with fingerprint 0123456789abcdef")
    assert "pass --overwrite" in line


@pytest.mark.parametrize("flag", ["--model", "--adapter"])
def test_model_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    inp = jsonl_input(tmp_path)
    missing = tmp_path / "no-such-model"
    args = ["run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", HUB_ID, flag, str(missing)]
    assert main(args) == 2
    what = flag.removeprefix("--")
    assert one_error_line(capsys.readouterr().err) == f"enrich: error: {what} {missing}: no such folder"


def test_model_not_found_on_s3(tmp_path: Path, s3_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    import s3fs

    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir("models-bucket")
    inp = jsonl_input(tmp_path)
    model = "s3://models-bucket/nothing-here"
    args = ["run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", model,
            "--s3-endpoint", s3_endpoint]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"enrich: error: model {model}: no such s3 prefix (nothing stored under it)"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """--log-level DEBUG: the traceback first, then the same last line and status."""
    result = enrich("run", "--input", "/nonexistent", "--output", str(tmp_path / "o"), "--model", HUB_ID,
                    "--log-level", "DEBUG")
    assert result.returncode == 2
    assert "Traceback (most recent call last):" in result.stderr
    assert "InputError: /nonexistent: no such file or folder" in result.stderr
    assert result.stderr.splitlines()[-1] == "enrich: error: /nonexistent: no such file or folder"


# ---------------------------------------------------------------- 3: another run holds the output
def test_output_locked_by_a_live_run(tmp_path: Path) -> None:
    """A live lease of another run (another host, unexpired): refused with status 3, a status of
    its own so a scheduler can retry later; the lease and the output are left untouched."""
    inp, out = jsonl_input(tmp_path), tmp_path / "out"
    out.mkdir()
    lease = json.dumps({"run_id": "r-other", "host": "another-host", "pid": 1, "expires": time.time() + 3600})
    (out / "_lease.json").write_text(lease)
    result = enrich("run", "--input", str(inp), "--output", str(out), "--model", HUB_ID)
    assert result.returncode == 3
    line = one_error_line(result.stderr)
    assert line.startswith(f"enrich: error: {out} is being written by run r-other (host another-host")
    assert (out / "_lease.json").read_text() == lease and sorted(p.name for p in out.iterdir()) == ["_lease.json"]


# ---------------------------------------------------------------- 1: the run failed
def test_an_input_error_inside_ray_is_a_failed_run(capsys: pytest.CaptureFixture[str]) -> None:
    """InputError raised by a read task (the run was under way) arrives wrapped by Ray, with
    Ray's retry advice appended: status 1, the file's message alone."""
    from ray.exceptions import RayTaskError

    from enrich.errors import report_error
    from enrich.read import InputError

    cause = InputError("/in/b.parquet: not a readable Parquet file\nFailed to apply UDF transform after 1/1 attempts")
    wrapped = RayTaskError("MapBatches(_read_shards)", "Traceback ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, InputError)  # Ray's wrapper is also an InputError: not exit 2
    assert report_error(wrapped, debug=False) == 1
    assert one_error_line(capsys.readouterr().err) == (
        "enrich: error: /in/b.parquet: not a readable Parquet file "
        "(the run failed; --log-level DEBUG shows the traceback)")


@pytest.mark.slow
def test_failed_run(tmp_path: Path, tiny_model: Path) -> None:
    """A corrupt Parquet file found while reading (inside Ray, after the run started) fails the
    run: status 1, the file and the reason on the last line, no traceback."""
    inp = jsonl_input(tmp_path)
    (inp / "b.parquet").write_bytes(b"this is not parquet")
    result = enrich(
        "run", "--input", str(inp), "--output", str(tmp_path / "out"), "--model", str(tiny_model),
        "--gpu-memory-utilization", "0.1", "--max-model-len", "1024", timeout=600,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"enrich: error: {inp}/b.parquet: not a readable Parquet file"), result.stderr[-3000:]
    assert last.endswith("(the run failed; --log-level DEBUG shows the traceback)")
    assert "Traceback" not in result.stderr
