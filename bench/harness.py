"""Running the systems: one monitored subprocess per system and repeat, then its measurements."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import MACHINE
from inputs import MAX_TOKENS, SEED, TEMPERATURE, TOP_P, write_vllm_logging_config
from measure import ENGINE_INIT_RE, PROGRESS_RE, base_record, measure_ceiling, measure_enrich, measure_peer, short_line
from monitor import log_tail, run_monitored

# The CLI: its hidden `_worker` subcommand is the ceiling's or the peer's run.
RUN_PY = Path(__file__).resolve().with_name("run.py")


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
        cmd = [sys.executable, str(RUN_PY), "_worker", system, str(d / "spec.json")]
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
        return head + [
            "run", *pool, "--task", "address",
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
