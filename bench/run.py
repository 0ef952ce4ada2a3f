#!/usr/bin/env python
"""Side-by-side throughput benchmark: raw vLLM (ceiling), Ray Data LLM (peer) and enrich, each
with one engine and with one engine per core.

    python bench/run.py [--rows 400,2000] [--repeats 3] [--max-num-seqs 64 --max-num-batched-tokens 2048]
                        [--sweep] [--systems ...] [--wait-for-load] [--out bench/out]
    python bench/run.py --memory-flatness [--flat-rows 10000,100000,1000000] [--flat-shards 4]

Every system gets the same input (N address rows, one JSONL shard written once), checkpoint,
prompt (enrich.prepare.render_prompt, thinking off), JSON schema, sampling (greedy, max_tokens
256), structured-outputs backend, context length, memory share and the same pinned
max_num_seqs / max_num_batched_tokens (or, with --sweep, each its own best of the same
candidates). Each run is a fresh subprocess, started only when the machine's 1-minute load is
≤ --max-load; runs go in a seeded random order per repeat. Method and definitions of every
number: bench/README.md. Results: OUT/results.json and bench/RESULTS.md.

Internal: `python bench/run.py _worker SYSTEM SPEC.json` is one ceiling or peer run.
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
from flatness import DEFAULT_SHARDS, DEFAULT_SIZES, FLATNESS_TOLERANCE, run_memory_flatness, write_standin  # noqa: E402
from harness import Bench, enrich_pinnable  # noqa: E402
from inputs import (  # noqa: E402
    DEFAULT_SOURCE,
    MAX_NUM_BATCHED_TOKENS,
    MAX_NUM_SEQS,
    engine_settings,
    ensure_model,
    has_gpu,
    machine_facts,
    make_input,
    pinned,
    sampling_settings,
)
from measure import agreement_check, distinct_outputs, read_enrich_outputs, read_outputs_jsonl  # noqa: E402
from monitor import RSS_INTERVAL_S  # noqa: E402
from report import ratio_text, render_markdown  # noqa: E402
from schedule import LOAD_WAIT_S, MAX_LOAD, LoadGate, check_start, run_order  # noqa: E402
from stats import aggregate, compute_targets  # noqa: E402
from sweep import DEFAULT_CANDIDATES, parse_candidates, run_sweep  # noqa: E402
from workers import worker_main  # noqa: E402

DEFAULT_RESULTS_MD = REPO / "bench" / "RESULTS.md"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="400,2000", help="input sizes, comma-separated (default 400,2000: the issue's)")
    p.add_argument("--repeats", type=int, default=3, help="runs per system and size (default 3)")
    p.add_argument("--model", help="checkpoint folder or hub id (default: the tiny checkpoint, built once)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="output folder (default bench/out)")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="chat JSONL whose user messages are the rows")
    p.add_argument("--batch-size", type=int, default=64, help="rows per engine batch, peer and enrich (default 64)")
    p.add_argument("--max-num-seqs", type=int, default=MAX_NUM_SEQS, help=f"pinned for every system (default {MAX_NUM_SEQS})")
    p.add_argument("--max-num-batched-tokens", type=int, default=MAX_NUM_BATCHED_TOKENS,
                   help=f"pinned for every system (default {MAX_NUM_BATCHED_TOKENS})")  # fmt: skip
    p.add_argument("--sweep", action="store_true", help="first try --sweep-values per system; each then runs at its best")
    p.add_argument("--sweep-values", default=DEFAULT_CANDIDATES, help=f"MAX_NUM_SEQS:MAX_NUM_BATCHED_TOKENS pairs (default {DEFAULT_CANDIDATES})")
    p.add_argument("--sweep-rows", type=int, default=400, help="input size of the sweep runs (default 400)")
    p.add_argument("--sweep-only", action="store_true",
                   help="with --sweep: stop once OUT/sweep.json is written (the repeats run later with --settings-from)")
    p.add_argument("--settings-from", type=Path, help="a sweep.json: each system's best, without sweeping again")
    p.add_argument("--order-seed", type=int, default=0, help="seed of the run order (default 0)")
    p.add_argument("--max-load", type=float, default=MAX_LOAD, help=f"no run starts above this 1-min load (default {MAX_LOAD})")
    p.add_argument("--wait-for-load", action="store_true", help="wait for the load at the start instead of refusing")
    p.add_argument("--load-wait", type=float, default=LOAD_WAIT_S, help="seconds a run waits for the load, at most")
    p.add_argument("--standin-engine", action="store_true",
                   help="plumbing check only: every system gets the flatness mode's vllm stand-in (not the peer: "
                   "Ray Data LLM needs the real async engine); its numbers mean nothing")  # fmt: skip
    p.add_argument("--gpu-memory-utilization", type=float, help="default 0.9 with a GPU, 0.25 on CPU")
    p.add_argument(
        "--enrich-max-attempts", type=int, default=1,
        help="enrich --max-attempts (default 1: one generation per row, the same work as the others)",
    )  # fmt: skip
    p.add_argument(
        "--peer-stage-cpus", type=float, default=0.1,
        help="num_cpus of the peer's chat-template/tokenize actors and preprocess/postprocess tasks (default "
        "0.1, bookkeeping only: two 0.75-CPU engines + two actors must leave room for the tasks on 2 cores; "
        "0 = Ray's default of 1 each, with which Ray Data waits forever on a 2-core node)",
    )  # fmt: skip
    p.add_argument("--vllm-log-level", default="WARNING", help="VLLM_LOGGING_LEVEL for every system (default WARNING)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is killed (default 3600)")
    p.add_argument("--results-md", type=Path, default=DEFAULT_RESULTS_MD, help="markdown report to regenerate")
    p.add_argument("--report-only", action="store_true",
                   help="only regenerate RESULTS.md from OUT's results.json, memory_flatness.json and the feeding files")
    p.add_argument("--memory-flatness", action="store_true", help="run the memory-flatness mode instead")
    p.add_argument("--flat-rows", default=DEFAULT_SIZES, help=f"input sizes of that mode (default {DEFAULT_SIZES})")
    p.add_argument("--flat-shards", type=int, default=DEFAULT_SHARDS, help=f"shards per input (default {DEFAULT_SHARDS})")
    p.add_argument("--flat-batch-size", type=int, default=256, help="enrich --batch-size in that mode (default 256)")
    p.add_argument("--flat-tolerance", type=float, default=FLATNESS_TOLERANCE, help="peak RSS ratio called flat")
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    args.rows = sorted({int(n) for n in args.rows.split(",")})
    if min(args.rows) < 1 or args.repeats < 1:
        p.error("--rows and --repeats must be ≥ 1")
    if args.sweep_only and not args.sweep:
        p.error("--sweep-only needs --sweep")
    args.out = args.out.resolve()
    return args


def write_report(args: argparse.Namespace, results: dict[str, Any] | None, flat: dict[str, Any] | None) -> None:
    md_path = args.results_md
    previous = md_path.read_text(encoding="utf-8") if md_path.exists() else None
    feeding_path = REPO / "bench" / "out" / "feeding.json"
    feeding = json.loads(feeding_path.read_text()) if feeding_path.exists() else None
    actor_path = feeding_path.with_name("feeding_actor.json")
    actor = json.loads(actor_path.read_text()) if actor_path.exists() else None
    md_path.write_text(render_markdown(results, flat, previous, feeding, actor), encoding="utf-8")
    print(f"[bench] wrote {md_path}", flush=True)


def system_outputs(run_dir: Path, system: str) -> dict[str, Any]:
    if system.startswith("enrich"):
        try:
            return read_enrich_outputs(run_dir / "output")
        except Exception:  # noqa: BLE001 - a failed run: no outputs to compare
            return {}
    return read_outputs_jsonl(run_dir / "outputs.jsonl")


def agreement_by_rows(out: Path, systems: list[str], sizes: list[int]) -> dict[str, Any]:
    """Per size, repeat 1 of every system against the ceiling's (ceiling-all-cores' when the
    ceiling did not run), with the number of distinct outputs."""
    agree = {}
    for n in sizes:
        found = [s for s in ("ceiling", "ceiling-all-cores") if (out / "runs" / f"{s}-n{n}-r1" / "outputs.jsonl").exists()]
        reference = found[0] if found else None
        ref = read_outputs_jsonl(out / "runs" / f"{reference}-n{n}-r1" / "outputs.jsonl") if reference else {}
        entry: dict[str, Any] = {"reference": reference, "ceiling_distinct_outputs": distinct_outputs(ref) if ref else None}
        for system in systems:
            if system != reference and ref:
                entry[system] = agreement_check(ref, system_outputs(out / "runs" / f"{system}-n{n}-r1", system))
        agree[str(n)] = entry
    return agree


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1], argv[2])
    args = parse_args(argv)
    if args.report_only:
        loaded = [json.loads(p.read_text()) if p.exists() else None
                  for p in (args.out / "results.json", args.out / "memory_flatness.json")]  # fmt: skip
        write_report(args, *loaded)
        return 0
    gate = LoadGate(max_load=args.max_load, wait_s=args.load_wait)
    refusal = check_start(gate, args.wait_for_load)
    if refusal:
        print(f"[bench] not starting: {refusal}", file=sys.stderr, flush=True)
        return 2
    started = time.time()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = has_gpu()
    model = ensure_model(args.model)
    engine = engine_settings(gpu, args.gpu_memory_utilization)
    bench = Bench(args, args.out, model, Path(), gpu, engine, sampling_settings(), gate)
    if args.standin_engine:
        bench.standin = str(write_standin(args.out / "standin"))

    results_path = args.out / "results.json"
    flat_path = args.out / "memory_flatness.json"
    if args.memory_flatness:
        sizes = sorted(int(s) for s in args.flat_rows.split(","))
        flat = run_memory_flatness(bench, sizes, args.flat_shards)
        flat_path.write_text(json.dumps(flat, indent=2))
        results = json.loads(results_path.read_text()) if results_path.exists() else None
        write_report(args, results, flat)
        return 0 if all(r["ok"] for r in flat["runs"]) else 1

    machine = machine_facts()
    pinnable = enrich_pinnable()
    if not pinnable:
        print("[bench] WARNING: enrich's CLI has no --max-num-seqs/--max-num-batched-tokens: enrich runs with "
              "vLLM's defaults, and every target involving enrich is reported inconclusive", flush=True)  # fmt: skip
    settings = {s: pinned(args.max_num_seqs, args.max_num_batched_tokens) for s in args.systems}
    sweep = None
    if args.sweep:
        bench.input_path = make_input(args.source, args.sweep_rows, args.out / "input" / f"address-{args.sweep_rows}.jsonl")
        sweep = run_sweep(bench, args.systems, parse_candidates(args.sweep_values), args.sweep_rows,
                          args.order_seed, pinnable)  # fmt: skip
        sweep["machine"] = machine  # with the commit and load at the start: read apart from results.json
        (args.out / "sweep.json").write_text(json.dumps(sweep, indent=2))
        print(f"[bench] wrote {args.out / 'sweep.json'}", flush=True)
        if args.sweep_only:
            return 0 if all(r["ok"] for r in sweep["runs"]) else 1
    elif args.settings_from:
        sweep = json.loads(args.settings_from.read_text())
    if sweep:
        settings = {s: sweep["best"][s]["settings"] for s in args.systems}

    inputs = {n: make_input(args.source, n, args.out / "input" / f"address-{n}.jsonl") for n in args.rows}
    orders = run_order([(n, s) for n in args.rows for s in args.systems], args.repeats, args.order_seed)
    runs = []
    for repeat, order in enumerate(orders, 1):
        for n, system in order:
            bench.input_path = inputs[n]
            runs.append(bench.run_system(system, repeat, n, settings[system]))

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
            "inputs": {str(n): str(p) for n, p in inputs.items()},
            "batch_size": args.batch_size,
            "engine": engine,
            "settings": settings,
            "settings_source": "sweep" if sweep else "one pinned setting for all",
            "enrich_pinnable_flags": pinnable,
            "sampling": bench.sampling,
            "enrich_max_attempts": args.enrich_max_attempts,
            "peer_stage_cpus": args.peer_stage_cpus,
            "vllm_log_level": args.vllm_log_level,
            "rss_interval_s": RSS_INTERVAL_S,
            "order_seed": args.order_seed,
            "orders": [[f"{s}@{n}" for n, s in order] for order in orders],
            "max_load": args.max_load,
            "standin_engine": args.standin_engine,
        },
        "sweep": sweep,
        "runs": runs,
        "agreement_with_ceiling": agreement_by_rows(args.out, args.systems, args.rows),
        **aggregate(runs, args.systems),
    }
    results["targets"] = compute_targets(results)
    results_path.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"[bench] wrote {results_path}", flush=True)
    flat = json.loads(flat_path.read_text()) if flat_path.exists() else None
    write_report(args, results, flat)
    for t in results["targets"]:
        print(f"[bench] target: {t['target']} [{t['rows']} rows]: {ratio_text(t['value'])} -> {t['status']}"
              + (f" ({'; '.join(t['notes'])})" if t["notes"] else ""), flush=True)
    return 0 if all(r.get("ok") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
