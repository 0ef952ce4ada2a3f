"""How much of enrich-all-cores' lead over Ray Data LLM comes from binding each engine to a core.

enrich binds each engine's threads to a core of its own (`enrich.cpu_slots`). Ray Data LLM
cannot (one `runtime_env` for all its engines), so the harness's two-engine peer runs its
vLLM workers unbound with one thread each (`bench/workers.py`: VLLM_CPU_OMP_THREADS_BIND=nobind,
OMP_NUM_THREADS=1). This control runs enrich-all-cores both ways, in one seeded random order,
each run a `bench/run.py` invocation behind the same load gate:

    own-cores      enrich as shipped (each engine claims a core)
    peer-binding   the peer's environment set by the operator: enrich then leaves the binding
                   alone, and its engines run as the peer's do

Every 5 s of a run, the CPU affinity (`Cpus_allowed_list`) of each thread of every vLLM process
in the run's tree is read; the record counts, per process and affinity, the threads seen with
it, so it shows which binding each variant really had (threads start unbound, "0-1" on two
cores, before vLLM binds them).

    python bench/binding.py [--rows 2000] [--repeats 3] [--settings-from bench/out-sweep/sweep.json]
                            [--out bench/out-binding]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

import stats
from schedule import LoadGate, add_probe_args, probe_runs  # bench/ is on sys.path: this script's folder

RUN_PY = Path(__file__).resolve().with_name("run.py")
# Each variant's environment on top of the caller's (the keys are removed first).
VARIANTS: dict[str, dict[str, str]] = {
    "own-cores": {},
    "peer-binding": {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"},
}
# RAY_ADDRESS would send the run to an outside cluster: the environment and the process tree
# sampled here would not be the run's.
CLEARED = {"RAY_ADDRESS", *(k for env in VARIANTS.values() for k in env)}
SYSTEM = "enrich-all-cores"


def parse_cpu_list(text: str) -> set[int]:
    """`Cpus_allowed_list` ("0-1,3") -> {0, 1, 3}."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def thread_affinities(pid: int) -> list[str]:
    """Each thread's `Cpus_allowed_list` (one entry per thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    found.append(line.split(":", 1)[1].strip())
        except OSError:  # the thread ended
            continue
    return found


def sample_affinities(root: int, into: dict[str, Counter[str]], stop: threading.Event, every_s: float = 5.0) -> None:
    """Every `every_s` until `stop`: for each vLLM process under `root` (keyed `title pid`), how
    many thread readings had each affinity."""
    while not stop.wait(every_s):
        try:
            procs = psutil.Process(root).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                cmd = p.cmdline()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            title = cmd[0] if cmd else ""
            if title.startswith("VLLM"):
                into.setdefault(f"{title.strip()} {p.pid}", Counter()).update(thread_affinities(p.pid))


def run_one(variant: str, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out) / f"{variant}-r{repeat}"
    (out / "results.json").unlink(missing_ok=True)  # a run that ends early must not read an older one
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | VARIANTS[variant]
    cmd = [sys.executable, str(RUN_PY), "--systems", SYSTEM, "--rows", str(args.rows), "--repeats", "1",
           "--model", args.model, "--out", str(out), "--results-md", str(out / "RESULTS.md"), "--wait-for-load",
           "--max-load", str(args.max_load),
           *(["--settings-from", args.settings_from] if args.settings_from else [])]  # fmt: skip
    affinities: dict[str, Counter[str]] = {}
    stop = threading.Event()
    with open(Path(args.out) / f"{variant}-r{repeat}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=sample_affinities, args=(proc.pid, affinities, stop), daemon=True)
        sampler.start()
        proc.wait()
        stop.set()
        sampler.join()
    return record(variant, repeat, proc.returncode, out / "results.json", affinities)


def record(
    variant: str, repeat: int, returncode: int, results: Path, affinities: dict[str, Counter[str]]
) -> dict[str, Any]:
    """One run's figures from its results.json; a run without one failed (ok False)."""
    run = json.loads(results.read_text())["runs"][0] if results.exists() else {"ok": False, "error": "no results.json"}
    keep = ("ok", "error", "wall_to_last_row_s", "steady_rows_per_s", "launch_to_all_engines_ready_s",
            "loadavg_1m_before", "settings")  # fmt: skip
    return {"variant": variant, "repeat": repeat, "returncode": returncode, **{k: run.get(k) for k in keep},
            "vllm_thread_affinities": {k: dict(sorted(v.items())) for k, v in sorted(affinities.items())}}  # fmt: skip


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant and r.get("ok")]
        out[variant] = {key: stats.summarize(r[key] for r in mine)
                        for key in ("wall_to_last_row_s", "steady_rows_per_s", "launch_to_all_engines_ready_s")}  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_probe_args(ap, repeats=3, out="bench/out-binding")
    ap.set_defaults(max_load=0.3)  # the fair harness's limit, not the probes' 0.5
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--model", default="models/demo-address")
    ap.add_argument("--settings-from", help="a sweep.json: enrich-all-cores' best settings")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    runs = []
    counts: dict[str, int] = {}
    for variant, load in probe_runs(list(VARIANTS), args, gate=LoadGate(max_load=args.max_load, wait_s=1800.0)):
        counts[variant] = counts.get(variant, 0) + 1
        print(f"[binding] {variant} r{counts[variant]} (load {load:.2f})", flush=True)
        runs.append(run_one(variant, counts[variant], args))
        print(f"[binding]   {json.dumps({k: runs[-1][k] for k in ('ok', 'wall_to_last_row_s', 'steady_rows_per_s')})}",
              flush=True)  # fmt: skip
    result = {"rows": args.rows, "system": SYSTEM, "seed": args.seed, "runs": runs, "summary": summarize(runs)}
    (Path(args.out) / "binding.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0 if all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
