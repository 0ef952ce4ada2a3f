#!/usr/bin/env python
"""Replace some systems' runs in OUT/results.json with a later run of the same harness, after a
defect in how those systems were run was fixed, and recompute what depends on them: the
aggregates, the agreement check and the targets. The replaced records, the rerun's command,
date and load, and the reason go under "reruns" (the report prints them); the replaced run
folders move to OUT/runs-replaced/.

    python bench/rerun.py --out bench/out-2000 --rerun bench/out-2000-peer --reason "..." \
        [--results-md bench/RESULTS.md]

It refuses a rerun whose input sizes, model, engine, sampling or pinned settings differ.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from run import agreement_by_rows, write_report  # noqa: E402
from stats import aggregate, compute_targets  # noqa: E402

SAME = ("rows", "model", "engine", "sampling", "batch_size", "enrich_max_attempts", "peer_stage_cpus")


def merge(base: dict[str, Any], new: dict[str, Any], reason: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`base` with its runs of the rerun's systems replaced by `new`'s; returns (merged, replaced)."""
    bc, nc = base["config"], new["config"]
    differ = [k for k in SAME if bc.get(k) != nc.get(k)]
    systems = list(nc["systems"])
    differ += [f"settings[{s}]" for s in systems if bc["settings"].get(s) != nc["settings"].get(s)]
    if differ or not set(systems) <= set(bc["systems"]):
        raise ValueError(f"not the same benchmark: {', '.join(differ) or 'systems ' + ', '.join(systems)}")
    replaced = [r for r in base["runs"] if r["system"] in systems]
    merged = dict(base)
    merged["runs"] = [r for r in base["runs"] if r["system"] not in systems] + new["runs"]
    merged.update(aggregate(merged["runs"], bc["systems"]))
    merged["reruns"] = [*base.get("reruns", []), {
        "systems": systems, "reason": reason, "date": new["date"], "command": new["command"],
        "duration_s": new["duration_s"], "loadavg_at_start": new["machine"].get("loadavg_at_start"),
        "git_commit": new["machine"].get("git_commit"), "replaced_runs": replaced,
    }]  # fmt: skip
    merged["targets"] = compute_targets(merged)
    return merged, replaced


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder whose results.json is updated")
    p.add_argument("--rerun", type=Path, required=True, help="folder of the rerun (its results.json and runs/)")
    p.add_argument("--reason", required=True, help="why the runs were replaced (recorded and printed)")
    p.add_argument("--results-md", type=Path, default=None, help="markdown report to regenerate")
    args = p.parse_args(argv)
    base = json.loads((args.out / "results.json").read_text())
    new = json.loads((args.rerun / "results.json").read_text())
    merged, _ = merge(base, new, args.reason)
    runs, old = args.out / "runs", args.out / "runs-replaced"
    for s in new["config"]["systems"]:
        for d in sorted(runs.glob(f"{s}-n*-r*")):
            old.mkdir(exist_ok=True)
            shutil.move(str(d), old / d.name)
        for d in sorted((args.rerun / "runs").glob(f"{s}-n*-r*")):
            shutil.copytree(d, runs / d.name)
    merged["agreement_with_ceiling"] = agreement_by_rows(args.out, merged["config"]["systems"], merged["config"]["rows"])
    merged["targets"] = compute_targets(merged)
    (args.out / "results.json").write_text(json.dumps(merged, indent=2, ensure_ascii=False))
    print(f"[bench] wrote {args.out / 'results.json'}: {len(new['runs'])} runs of {', '.join(new['config']['systems'])} "
          f"replace {sum(1 for r in base['runs'] if r['system'] in new['config']['systems'])}", flush=True)  # fmt: skip
    if args.results_md:
        flat = args.out / "memory_flatness.json"
        write_report(argparse.Namespace(results_md=args.results_md), merged,
                     json.loads(flat.read_text()) if flat.exists() else None)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
