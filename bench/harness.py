"""Running the systems: one monitored subprocess per system, row count and repeat, then its
measurements."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import is_all_cores
from inputs import MAX_TOKENS, SEED, TEMPERATURE, TOP_P, write_vllm_logging_config
from measure import (
    ENGINE_INIT_RE,
    PROGRESS_RE,
    base_record,
    last_row_written_at,
    measure_ceiling,
    measure_enrich,
    measure_peer,
    short_line,
)
from monitor import log_tail, run_monitored
from schedule import MAX_LOAD, LoadGate

# The CLI: its hidden `_worker` subcommand is the ceiling's or the peer's run.
RUN_PY = Path(__file__).resolve().with_name("run.py")
# enrich CLI flags for the pinned scheduler settings, by EngineConfig field.
PIN_FIELDS = ("max_num_seqs", "max_num_batched_tokens")


def enrich_pinnable() -> list[str]:
    """The pinned settings enrich's CLI accepts (its flags come from EngineConfig's fields)."""
    from enrich.config import EngineConfig

    return [f for f in PIN_FIELDS if f in EngineConfig.model_fields]


@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    model: str
    input_path: Path
    gpu: bool
    engine: dict[str, Any]
    sampling: dict[str, Any]
    gate: LoadGate = field(default_factory=LoadGate)
    standin: str | None = None  # --standin-engine: the stand-in vllm package's folder


    def env(self, extra_pythonpath: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("VLLM_LOGGING_LEVEL", self.args.vllm_log_level)
        if "VLLM_LOGGING_CONFIG_PATH" not in env:
            log_config = write_vllm_logging_config(self.out / "vllm_logging.json", self.args.vllm_log_level)
            env["VLLM_LOGGING_CONFIG_PATH"] = str(log_config)
        env["PYTHONUNBUFFERED"] = "1"
        # Ray folds lines that differ only in numbers: every engine's ready line must come through.
        env["RAY_DEDUP_LOGS"] = "0"
        extra_pythonpath = extra_pythonpath or self.standin
        if extra_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_pythonpath, env.get("PYTHONPATH")) if p)
        return env

    def run_dir(self, name: str, sub: str = "runs") -> Path:
        d = self.out / sub / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def engines(self, system: str) -> int:
        return engines_per_machine(self.gpu) if is_all_cores(system) else 1

    def run_worker(self, system: str, d: Path, settings: dict[str, int]) -> dict[str, Any]:
        spec = {
            "model": self.model,
            "input": str(self.input_path),
            "out_dir": str(d),
            "result": str(d / "result.json"),
            "engine": {**self.engine, **settings},
            "sampling": self.sampling,
            "batch_size": self.args.batch_size,
            "gpu": self.gpu,
            "engines": self.engines(system),
            "peer_stage_cpus": self.args.peer_stage_cpus,
        }
        (d / "spec.json").write_text(json.dumps(spec, indent=2))
        cmd = [sys.executable, str(RUN_PY), "_worker", system, str(d / "spec.json")]
        proc = run_monitored(
            cmd, d / "log.txt", env=self.env(), timeout_s=self.args.timeout, patterns={"engine_init": ENGINE_INIT_RE}
        )
        rec = base_record(system, proc)
        if proc.returncode == 0 and (d / "result.json").exists():
            res = json.loads((d / "result.json").read_text())
            rec.update((measure_ceiling if system.startswith("ceiling") else measure_peer)(proc, res))
            rec["binding"] = res.get("binding")
        else:
            rec["ok"] = False
            rec["error"] = log_tail(proc.log_path)
        return rec

    def enrich_cmd(
        self, input_path: Path, output: Path, batch_size: int, engines: int = 1, settings: dict[str, int] | None = None
    ) -> list[str]:
        exe = Path(sys.executable).parent / "enrich"
        head = [str(exe)] if exe.exists() else [sys.executable, "-m", "enrich.cli"]
        e = self.engine
        pool = []
        if engines > 1:  # leave Ray half a CPU for the light read/prepare/validate stages
            pool = ["--num-engines", str(engines)]
            if not self.gpu:
                pool += ["--cpus-per-engine", f"{(len(os.sched_getaffinity(0)) - 0.5) / engines:.2f}"]
        pins = []
        for name in enrich_pinnable():
            if settings and name in settings:
                pins += ["--" + name.replace("_", "-"), str(settings[name])]
        return head + [
            "run", *pool, "--task", "address",
            "--input", str(input_path), "--output", str(output), "--model", self.model,
            "--id-column", "id", "--overwrite",
            "--batch-size", str(batch_size),
            "--max-model-len", str(e["max_model_len"]),
            "--gpu-memory-utilization", str(e["gpu_memory_utilization"]),
            *pins,
            "--seed", str(SEED),
            "--temperature", str(TEMPERATURE), "--top-p", str(TOP_P),
            "--max-tokens", str(MAX_TOKENS),
            "--max-attempts", str(self.args.enrich_max_attempts),
        ]  # fmt: skip

    def run_enrich(self, system: str, d: Path, settings: dict[str, int]) -> dict[str, Any]:
        output = d / "output"
        engines = self.engines(system)
        cmd = self.enrich_cmd(self.input_path, output, self.args.batch_size, engines, settings)
        proc = run_monitored(
            cmd, d / "log.txt", env=self.env(), timeout_s=self.args.timeout,
            patterns={"progress": PROGRESS_RE, "engine_init": ENGINE_INIT_RE},
        )  # fmt: skip
        rec = base_record(system, proc)
        summary_path = output / "_summary.json"
        if proc.returncode == 0 and summary_path.exists():
            # The summary is written right after its figures are taken: its mtime is the job's end.
            summary_at = summary_path.stat().st_mtime
            rec.update(measure_enrich(proc, json.loads(summary_path.read_text()), summary_at))
            last = last_row_written_at(output)
            rec["wall_to_last_row_s"] = (last - proc.t_launch) if last else None
        else:
            rec["ok"] = False
            rec["error"] = log_tail(proc.log_path)
        return rec

    def run_system(self, system: str, repeat: int, rows: int, settings: dict[str, int], sub: str = "runs") -> dict[str, Any]:
        """One run: wait for a quiet machine, run, measure; the record says how quiet it was."""
        label = f"{system} n={rows} r{repeat} {settings}"
        load = self.gate.wait()
        # Judged against the 0.3 even when --max-load lets a run start above it.
        load["load_ok"] = load["loadavg_1m_before"] <= MAX_LOAD
        print(f"[bench] {label}: running (load {load['loadavg_1m_before']:.2f}, waited {load['load_waited_s']:.0f}s)",
              flush=True)  # fmt: skip
        d = self.run_dir(f"{system}-n{rows}-r{repeat}", sub)
        run = self.run_enrich if system.startswith("enrich") else self.run_worker
        rec = run(system, d, settings)
        engines = self.engines(system)
        rec.update(load, repeat=repeat, rows_requested=rows, engines=engines, settings=settings)
        rec["settings_pinned"] = not system.startswith("enrich") or set(enrich_pinnable()) >= set(settings)
        times = rec.pop("engine_init_times", None) or []
        rec["launch_to_all_engines_ready_s"] = times[engines - 1] - rec["t_launch"] if len(times) >= engines else None
        # A pool that started fewer engines than asked is not the system under test. (A one-engine
        # run may lack the init line: the stand-in never logs it, and measure.py falls back.)
        # A pool that started them all but decoded on fewer is: an engine ready after the others
        # took every batch is how that system ran, so the run counts, flagged (`idle_engines`);
        # dropping it would drop the system's slowest runs. Decoding engines are known for the
        # peer (its per-batch log line) and enrich (`_summary.json`); each ceiling-all-cores
        # process decodes its share. Only engines that had a batch to take count: an input of
        # fewer batches than engines leaves the rest idle unflagged. An unknown count flags nothing.
        rec["engines_ready"] = len(times)
        decoding = rec.get("decoding_engines")
        batches = math.ceil(rows / self.args.batch_size)
        if rec.get("ok") and engines > 1 and not self.standin:
            if len(times) < engines:
                rec.update(ok=False, error=f"{len(times)} of {engines} engines started (vLLM's init engine line)")
            elif decoding is not None and decoding < min(engines, batches):
                rec["idle_engines"] = min(engines, batches) - decoding  # engines that had a batch to take
        if rec.get("ok"):
            rec["e2e_rows_per_s"] = rec["rows"] / rec["wall_to_last_row_s"] if rec.get("wall_to_last_row_s") else None
        print(f"[bench] {label}: " + short_line(rec), flush=True)
        return rec


def engines_per_machine(gpu: bool) -> int:
    """One engine per GPU, or per usable core on a CPU machine (vLLM-CPU binds each to its core)."""
    if gpu:
        import torch

        return max(1, torch.cuda.device_count())
    return max(1, len(os.sched_getaffinity(0)))
