"""What an embedded `ray.init` costs before enrich's first engine actor exists (issue 14's start-up gap).

Each variant runs in a fresh process: import Ray, `ray.init(address="local", ...)`, start one
actor and get a reply from it; the time is from process start to that reply. Variants differ in
what `enrich.pipeline.init_ray` passes: a `runtime_env` (only to set VLLM_LOGGING_LEVEL in the
workers) and whether the dashboard starts (Ray's default: when `ray[default]` is installed).
Repeats go in a seeded random order, each started at a 1-minute load at most --max-load.

    python bench/startup.py [--repeats 3] [--out bench/out/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from schedule import add_probe_args, probe_runs  # bench/ is on sys.path: this script's folder

PROBE = """
import time, sys
t0 = float(sys.argv[1])
import ray
ray.init(address="local", {args})
@ray.remote(num_cpus=0)
class Probe:
    def ping(self) -> int:
        return 1
ray.get(Probe.remote().ping.remote())
print(time.time() - t0)
ray.shutdown()
"""

VARIANTS = {
    "runtime_env + dashboard (old init_ray)": 'runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}}',
    "no runtime_env + dashboard": "",
    "runtime_env, no dashboard": 'runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}}, include_dashboard=False',
    "no runtime_env, no dashboard (new init_ray)": "include_dashboard=False",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_args(parser, repeats=3, out="bench/out/startup.json")
    args = parser.parse_args()
    runs = []
    for name, load in probe_runs(list(VARIANTS), args):
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        done = subprocess.run([sys.executable, "-c", PROBE.format(args=VARIANTS[name]), repr(time.time())],
                              capture_output=True, text=True, env=env, check=True)
        seconds = float(done.stdout.strip().splitlines()[-1])
        runs.append({"variant": name, "seconds": round(seconds, 2), "load_at_start": round(load, 2)})
        print(f"{name:40s} {seconds:6.2f} s  (load {load:.2f})", flush=True)
    summary = {name: {"median_s": statistics.median(r["seconds"] for r in runs if r["variant"] == name),
                      "min_s": min(r["seconds"] for r in runs if r["variant"] == name),
                      "max_s": max(r["seconds"] for r in runs if r["variant"] == name)} for name in VARIANTS}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "cpus": os.cpu_count(), "runs": runs,
                               "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
