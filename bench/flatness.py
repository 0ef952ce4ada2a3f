"""The memory-flatness mode (`--memory-flatness`): `enrich run` on a small and a large input
with a stand-in for vLLM, so the peak RSS measured is enrich's own."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inputs import make_input
from monitor import log_tail, run_monitored

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


STANDIN_INIT = '''\
"""bench/run.py --memory-flatness: a stand-in for vLLM (NOT vLLM). It answers every request
at once with one fixed, valid address, so a run measures enrich's own memory use."""
from types import SimpleNamespace

__version__ = "0+bench-standin"
TEXT = @ANSWER_JSON@
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
STANDIN_INIT = STANDIN_INIT.replace(
    "@ANSWER_JSON@", repr(json.dumps(STANDIN_ANSWER, ensure_ascii=False, separators=(",", ":")))
)
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
        "engine": "a `vllm` stand-in package put first on PYTHONPATH (bench/out/standin); no src change",
        "runs": runs,
        "peak_ratio": peak_ratio,
        "tolerance": bench.args.flat_tolerance,
        "flat": peak_ratio is not None and peak_ratio <= bench.args.flat_tolerance,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }
