"""The log a user reads: the job's own lines unless --log-level DEBUG."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from enrich.logs import library_env, setup_logging
from tests.conftest import REPO
from tests.helpers import synthetic_addresses


@pytest.fixture
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """setup_logging changes process state: the env, Ray Data's context, handler levels."""
    import ray.data

    for name in library_env("INFO"):
        monkeypatch.setenv(name, "")  # recorded, so what setup_logging sets is undone after
        monkeypatch.delenv(name)
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.enable_operator_progress_bars, ctx.print_on_execution_start)
    console = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    saved_handlers = [(h.level, h.formatter, list(h.filters)) for h in console]
    ray_level = logging.getLogger("ray").level
    yield
    ctx.enable_progress_bars, ctx.enable_operator_progress_bars, ctx.print_on_execution_start = saved
    for handler, (level, formatter, filters) in zip(console, saved_handlers):
        handler.setLevel(level)
        handler.setFormatter(formatter)
        handler.filters[:] = filters
    logging.getLogger("ray").setLevel(ray_level)


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_setup_quiets_the_libraries_unless_debug(level: str) -> None:
    import ray.data

    setup_logging(level)
    debug = level == "DEBUG"
    ctx = ray.data.DataContext.get_current()
    assert (ctx.enable_progress_bars, ctx.print_on_execution_start) == (debug, debug)
    assert os.environ["VLLM_LOGGING_LEVEL"] == ("DEBUG" if debug else "ERROR")
    assert os.environ["RAY_LOGGER_LEVEL"] == ("debug" if debug else "warning")
    assert ("ignore::FutureWarning" in os.environ.get("PYTHONWARNINGS", "")) == (not debug)
    assert (os.environ.get("TORCH_CPP_LOG_LEVEL") == "ERROR") == (not debug)
    console = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    assert console and all(h.level == (logging.INFO if debug else logging.WARNING) for h in console)
    assert logging.getLogger("enrich.progress").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("_restore_logging")
def test_ray_data_console_drops_tracebacks_unless_debug() -> None:
    """A failed task is logged by Ray Data with its traceback: at INFO the console shows the
    first line only, and drops the records that only introduce a traceback."""
    setup_logging("INFO")
    (console,) = [h for h in logging.getLogger("ray.data").handlers if h.get_name() == "console"]
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("ray.data.x", logging.ERROR, "f.py", 1, "task failed:\nmore", (), sys.exc_info())
    assert console.formatter is not None
    line = console.formatter.format(record)
    assert "task failed:" in line and "\n" not in line and "Traceback" not in line
    assert record.exc_info is not None  # the file handler still gets the traceback
    assert console.filter(record)
    full = logging.LogRecord("ray.data.x", logging.ERROR, "f.py", 1, "Full stack trace:", (), None)
    assert not console.filter(full)


@pytest.mark.usefixtures("_restore_logging")
def test_an_explicit_vllm_level_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    setup_logging("INFO")
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO"


@pytest.mark.slow
def test_a_run_logs_only_its_own_lines(tmp_path: Path, tiny_model: Path) -> None:
    """A real `enrich run` at INFO: enrich's lines (status, commits, summary); no Ray Data
    progress or plan, no vLLM INFO lines, no traceback."""
    (tmp_path / "in").mkdir()
    rows = [json.dumps({"text": t}, ensure_ascii=False) for t in synthetic_addresses(12)]
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in library_env("INFO")}
    result = subprocess.run(
        [sys.executable, "-m", "enrich.cli", "run", "--input", str(tmp_path / "in"), "--output",
         str(tmp_path / "out"), "--model", str(tiny_model), "--flag-invalid", "--status-every-seconds", "1",
         "--gpu-memory-utilization", "0.1", "--max-model-len", "1024", "--batch-size", "4"],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "enrich.progress: progress: " in log and result.stdout.strip()  # the status; the summary
    for noise in ("Total Progress", "Execution plan", "Starting execution of Dataset"):
        assert noise not in log, (noise, log[-4000:])
    # No traceback, from the driver or the engine actors (whose lines Ray prefixes "(MapWorker(..."):
    # the engine shuts down cleanly at the end (no EngineDeadError, no resource_tracker KeyError,
    # no AsyncLLM.__del__ error at exit), and the libraries' import-time chatter is cut.
    for noise in ("Traceback", "EngineDeadError", "Exception ignored", "KeyError", "FutureWarning",
                  "NUMA binding", "Loading safetensors",
                  "Token authentication is enabled"):
        assert noise not in log, (noise, log[-4000:])
    # vLLM's format: "INFO 12-03 15:40:01 [core.py:75] ..." (Ray prefixes an actor's lines).
    vllm_info = [line for line in log.splitlines() if re.search(r"INFO \d\d-\d\d \d\d:\d\d:\d\d \[", line)]
    assert vllm_info == [], vllm_info[:5]
    print(log)  # `pytest -s`: what a user sees
