#!/usr/bin/env python
"""Side-by-side throughput benchmark: raw vLLM (ceiling), Ray Data LLM (peer) and enrich.

    python bench/run.py [--rows 2000] [--repeats 3] [--model PATH]
                        [--systems ceiling,peer,enrich,enrich-all-cores] [--out bench/out]
    python bench/run.py --memory-flatness [--flat-rows 10000,1000000]

All three systems get the same input (N address rows, one JSONL shard written once), the
same checkpoint, prompt (enrich.prepare.render_prompt, thinking off), JSON schema, sampling
(greedy, max_tokens 256), structured-outputs backend, context length and memory share. Each
system runs in a fresh subprocess per repeat; repeats interleave the systems. Method and
definitions of every number: bench/README.md. Results: OUT/results.json and bench/RESULTS.md.

Internal: `python bench/run.py _worker {ceiling|peer} SPEC.json` is one system's run.

The parts, one role each: common (shared constants), monitor (running a process: log, RSS,
leftovers), inputs (rows, model, engine/sampling settings, machine facts), workers (the
ceiling's and the peer's subprocess side), measure (a run's numbers), harness (Bench: runs
the systems), stats (summaries, ratios, targets), report (RESULTS.md), flatness
(--memory-flatness).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The parts sit next to this file and import each other by plain name. Run as a script
# (`python bench/run.py`, and the `_worker` subprocesses) Python puts this folder on sys.path
# itself; this covers loading the file any other way (the tests load it by path).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from common import REPO, SYSTEMS  # noqa: E402
from flatness import FLATNESS_TOLERANCE, run_memory_flatness  # noqa: E402
from harness import Bench  # noqa: E402
from inputs import (  # noqa: E402
    DEFAULT_SOURCE,
    engine_settings,
    ensure_model,
    has_gpu,
    machine_facts,
    make_input,
    sampling_settings,
)
from measure import FIRST_OUTPUT_TOLERANCE_S, agreement, read_enrich_outputs, read_outputs_jsonl  # noqa: E402
from monitor import RSS_INTERVAL_S  # noqa: E402
from report import ratio_text, render_markdown  # noqa: E402
from stats import aggregate, compute_targets  # noqa: E402
from workers import worker_main  # noqa: E402

DEFAULT_RESULTS_MD = REPO / "bench" / "RESULTS.md"


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
        print(f"[bench] target: {t['target']}: {ratio_text(t['value'])} -> {t['status']}"
              + (f" ({'; '.join(t['notes'])})" if t["notes"] else ""), flush=True)
    return 0 if all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
