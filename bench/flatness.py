"""The memory-flatness mode (`--memory-flatness`): `enrich run` on inputs of several sizes, each
split into several shards, with a stand-in for vLLM that is slower than the reader (so rows
back up before the engine and backpressure has to hold them), recording the RSS of the whole
process tree over time, not only its peak."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inputs import make_input
from monitor import log_tail, process_profile, run_monitored

if TYPE_CHECKING:
    from harness import Bench

# The stand-in's one answer (a valid address); the run's outputs are checked against it.
STANDIN_ANSWER = {
    "province": "浙江省", "city": "杭州市", "district": "西湖区",
    "specific_location": "文三路90号", "name": "张伟", "phone": "13800000000",
}  # fmt: skip
STANDIN_PROVINCE = STANDIN_ANSWER["province"]
# Peak RSS ratio (largest / smallest input) still called flat: --flat-tolerance's default.
FLATNESS_TOLERANCE = 1.25
DEFAULT_SIZES = "10000,100000,1000000"
DEFAULT_SHARDS = 4
# The stand-in's cost: per generate call and per row. 2 ms a row caps it at ~500 rows/s, half
# of what reading + preparing reached on this machine (~980 rows/s with an instant stand-in).
STANDIN_CALL_MS = 20.0
STANDIN_ROW_MS = 2.0
TIMELINE_POINTS = 60  # RSS samples kept per run in the JSON


STANDIN_INIT = '''\
"""bench/run.py --memory-flatness: a stand-in for vLLM (NOT vLLM). It answers every request
at once with one fixed, valid address, so a run measures enrich's own memory use."""
import asyncio
import time
from types import SimpleNamespace

__version__ = "0+bench-standin"
TEXT = @ANSWER_JSON@
TOKENS = 40
CALL_S = @CALL_S@  # per generate call
ROW_S = @ROW_S@  # per row: slower than the reader, so rows back up before the engine


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
        time.sleep(CALL_S + ROW_S * len(prompts))
        return [_output() for _ in prompts]


def _output():
    done = SimpleNamespace(text=TEXT, finish_reason="stop", token_ids=[0] * TOKENS)
    return SimpleNamespace(outputs=[done], finished=True, request_id=None)


class AsyncEngineArgs:
    def __init__(self, model=None, **kwargs):
        self.model = model
        self.kwargs = kwargs

    def create_engine_config(self):
        scheduler = SimpleNamespace(max_num_seqs=self.kwargs.get("max_num_seqs") or 256)
        return SimpleNamespace(scheduler_config=scheduler, args=self)


class AsyncLLMEngine:
    """The async engine (vllm.v1.engine.async_llm.AsyncLLM, as the async EngineActor builds it):
    requests share one engine that does ROW_S of work per row, one row at a time."""

    def __init__(self, config=None):
        self.config = config
        self._lock = None

    @classmethod
    def from_engine_args(cls, args, **kwargs):
        return cls(args)

    @classmethod
    def from_vllm_config(cls, vllm_config, **kwargs):
        return cls(vllm_config)

    def get_tokenizer(self, *args):
        return _Tokenizer()

    async def generate(self, prompt, sampling_params=None, request_id=None, lora_request=None, **kwargs):
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            await asyncio.sleep(ROW_S)
        yield _output()

    def shutdown(self):
        pass


AsyncLLM = AsyncLLMEngine
'''
STANDIN_INIT = STANDIN_INIT.replace(
    "@ANSWER_JSON@", repr(json.dumps(STANDIN_ANSWER, ensure_ascii=False, separators=(",", ":")))
)


def standin_cap(batch_size: int, call_ms: float = STANDIN_CALL_MS, row_ms: float = STANDIN_ROW_MS) -> float:
    """Rows per second one stand-in engine manages with full batches."""
    return batch_size / ((call_ms + row_ms * batch_size) / 1000)
STANDIN_SAMPLING = '''\
import enum

from vllm import SamplingParams  # noqa: F401


class StructuredOutputsParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2
'''
STANDIN_CONFIG = '''\
class StructuredOutputsConfig:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
'''


def write_standin(root: Path, call_ms: float = STANDIN_CALL_MS, row_ms: float = STANDIN_ROW_MS) -> Path:
    """A `vllm` package that shadows the real one when `root` is first on PYTHONPATH."""
    pkg = root / "vllm"
    pkg.mkdir(parents=True, exist_ok=True)
    code = STANDIN_INIT.replace("@CALL_S@", repr(call_ms / 1000)).replace("@ROW_S@", repr(row_ms / 1000))
    (pkg / "__init__.py").write_text(code, encoding="utf-8")
    (pkg / "sampling_params.py").write_text(STANDIN_SAMPLING, encoding="utf-8")
    (pkg / "config.py").write_text(STANDIN_CONFIG, encoding="utf-8")
    engine = pkg / "v1" / "engine"
    engine.mkdir(parents=True, exist_ok=True)
    (pkg / "v1" / "__init__.py").write_text("", encoding="utf-8")
    (engine / "__init__.py").write_text("", encoding="utf-8")
    (engine / "async_llm.py").write_text("from vllm import AsyncLLM  # noqa: F401\n", encoding="utf-8")
    # enrich's occupancy logger subclasses this; the stand-in never calls it (its occupancy then
    # comes from the actor's own count of requests in flight).
    metrics = pkg / "v1" / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "__init__.py").write_text("", encoding="utf-8")
    (metrics / "loggers.py").write_text("class StatLoggerBase:\n    pass\n", encoding="utf-8")
    return root


def output_summary(output: Path) -> dict[str, Any]:
    """Parquet files written (the write path should give a handful per shard, not one per
    block) and how many enriched rows carry the stand-in's answer."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = sorted(output.glob("part-*.parquet"))
    rejects = sorted((output / "_rejects").glob("part-*.parquet"))
    standin_rows = 0
    for part in parts:
        province = pq.read_table(part, columns=["province"]).column("province")
        standin_rows += pc.sum(pc.equal(province, STANDIN_PROVINCE)).as_py() or 0
    return {"output_files": len(parts), "reject_files": len(rejects), "standin_rows": standin_rows}


def make_shards(source: Path, n: int, shards: int, folder: Path) -> Path:
    """N rows split into `shards` JSONL files (ids unique across them) in one input folder.
    The folder also holds each file's `.meta.json` (inputs.make_input's cache key): read
    through `shards_glob`, not as the folder."""
    per = -(-n // shards)
    for k in range(shards):
        start = k * per
        if start < n:
            make_input(source, min(per, n - start), folder / f"part-{k:03d}.jsonl", start=start)
    return folder


def shards_glob(folder: Path) -> Path:
    """The shards of `make_shards`, without their `.meta.json` sidecars (read as a folder, each
    sidecar was one more input row, rejected as empty_text: rows_in was N + 4)."""
    return folder / "part-*.jsonl"


def rss_profile(timeline: Sequence[tuple[float, int]], t_launch: float, points: int = TIMELINE_POINTS) -> dict[str, Any]:
    """RSS over the run: at 25/50/75/95% of its time, the median of each half (growth shows as
    a second half above the first), and `points` evenly spaced samples [s since launch, bytes]."""
    if not timeline:
        return {"at": {}, "first_half_median": None, "second_half_median": None, "samples": []}
    end = timeline[-1][0]
    span = end - t_launch or 1.0

    def at(frac: float) -> int:
        t = t_launch + frac * span
        return next(rss for ts, rss in timeline if ts >= t)

    half = t_launch + span / 2
    first = [rss for ts, rss in timeline if ts < half] or [timeline[0][1]]
    second = [rss for ts, rss in timeline if ts >= half]
    step = max(1, len(timeline) // points)
    return {
        "at": {f"{int(f * 100)}%": at(f) for f in (0.25, 0.5, 0.75, 0.95)},
        "first_half_median": statistics.median(first),
        "second_half_median": statistics.median(second),
        "samples": [[round(ts - t_launch, 1), rss] for ts, rss in timeline[::step]],
    }


def run_memory_flatness(bench: Bench, sizes: Sequence[int], shards: int = DEFAULT_SHARDS) -> dict[str, Any]:
    standin = write_standin(bench.out / "standin")
    batch = bench.args.flat_batch_size
    runs = []
    for n in sizes:
        inp = make_shards(bench.args.source, n, shards, bench.out / "input" / f"address-{n}-x{shards}")
        d = bench.run_dir(f"flat-{n}")
        output = d / "output"
        cmd = bench.enrich_cmd(shards_glob(inp), output, batch)
        print(f"[bench] memory flatness: enrich run, slow stand-in engine, {n} rows in {shards} shards", flush=True)
        proc = run_monitored(
            cmd, d / "log.txt", env=bench.env(str(standin)), timeout_s=bench.args.timeout, per_process=True
        )
        rec: dict[str, Any] = {
            "rows": n, "shards": shards, "ok": proc.returncode == 0, "wall_s": proc.wall_s,
            "peak_rss_bytes": proc.peak_rss_bytes, "peak_procs": proc.peak_procs, "log": proc.log_path,
            "rss": rss_profile(proc.rss_timeline, proc.t_launch),
            "processes": process_profile(proc.process_timeline, proc.process_labels, proc.t_launch),
        }  # fmt: skip
        summary_path = output / "_summary.json"
        if proc.returncode == 0 and summary_path.exists():
            s = json.loads(summary_path.read_text())
            rec.update(rows_in=s["rows_in"], rows_ok=s["rows_ok"], rows_rejected=s["rows_rejected"])
            rec.update(output_summary(output))
            # The stand-in must really have replaced vLLM: then every output is its one row.
            rec["ok"] = rec["standin_rows"] == rec["rows_ok"] == n
        else:
            rec["ok"] = False
            rec["error"] = log_tail(proc.log_path)
        print(f"[bench]   {n} rows: " + (f"peak RSS {rec['peak_rss_bytes'] / 2**30:.2f} GiB, "
                                         f"wall {rec['wall_s']:.1f}s" if rec["ok"] else "FAILED"), flush=True)
        runs.append(rec)
    ok = [r for r in runs if r["ok"]]
    peak_ratio = ok[-1]["peak_rss_bytes"] / ok[0]["peak_rss_bytes"] if len(ok) == len(runs) >= 2 else None
    return {
        "engine": f"a `vllm` stand-in package put first on PYTHONPATH ({standin}), "
        f"{STANDIN_CALL_MS:g} ms per call + {STANDIN_ROW_MS:g} ms per row: at most "
        f"{standin_cap(batch):.0f} rows/s with {batch}-row batches; no src change",
        "standin_cap_rows_per_s": standin_cap(batch),
        "batch_size": batch,
        "runs": runs,
        "peak_ratio": peak_ratio,
        "tolerance": bench.args.flat_tolerance,
        "flat": peak_ratio is not None and peak_ratio <= bench.args.flat_tolerance,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }
