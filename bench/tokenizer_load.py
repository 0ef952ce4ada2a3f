"""What loading the tokenizer costs a prepare worker: AutoTokenizer (enrich until 2026-12-07)
against the class tokenizer_config.json names (enrich.prepare.load_tokenizer now).

Each variant runs in a fresh process, as a Ray worker's first prepare task does: import, load
the tokenizer, render and tokenize 64 address prompts. It reports the wall time and the CPU time
(user + system) of the process from its start, and whether torch got imported. Repeats go in a
seeded random order, each started at a 1-minute load at most --max-load.

    python bench/tokenizer_load.py [--repeats 5] [--model models/demo-address] [--out bench/out/tokenizer_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from schedule import add_probe_args, probe_runs  # bench/ is on sys.path: this script's folder
from stats import summarize

PROBE = """
import json, os, sys, time
t0 = float(sys.argv[1])
model = sys.argv[2]
{load}
from enrich.prepare import render_prompt
from enrich.tasks import build_task
task = build_task("address")
prompts = [render_prompt(tok, task, {{"text": f"浙江省杭州市西湖区文三路{{i}}号 张伟 13800000000"}}) for i in range(64)]
ids = tok(prompts, add_special_tokens=False).input_ids
times = os.times()
print(json.dumps({{"wall_s": time.time() - t0, "cpu_s": times.user + times.system, "torch": "torch" in sys.modules,
                  "tokens": sum(map(len, ids))}}))
"""

VARIANTS = {
    "AutoTokenizer (before)": "from transformers import AutoTokenizer\ntok = AutoTokenizer.from_pretrained(model)",
    "declared class (enrich.prepare now)": "from enrich.prepare import load_tokenizer\n"
    "tok = load_tokenizer(model, None, None)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_probe_args(parser, repeats=5, out="bench/out/tokenizer_load.json")
    parser.add_argument("--model", default="models/demo-address")
    args = parser.parse_args()
    runs = []
    for name, load in probe_runs(list(VARIANTS), args):
        code = PROBE.format(load=VARIANTS[name])
        done = subprocess.run([sys.executable, "-c", code, repr(time.time()), args.model],
                              capture_output=True, text=True, check=True)
        run = {"variant": name, **json.loads(done.stdout.strip().splitlines()[-1]), "load_at_start": round(load, 2)}
        runs.append(run)
        print(f"{name:38s} wall {run['wall_s']:5.2f} s  cpu {run['cpu_s']:5.2f} s  torch {run['torch']}  "
              f"(load {load:.2f})", flush=True)
    tokens = {r["tokens"] for r in runs}
    assert len(tokens) == 1, f"the variants tokenized differently: {tokens}"
    summary = {}
    for name in VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        summary[name] = {key: summarize(r[key] for r in mine) for key in ("wall_s", "cpu_s")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "cpus": os.cpu_count(), "model": args.model,
                               "runs": runs, "summary": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
