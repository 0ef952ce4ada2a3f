"""`make demo`: the address job on the bundled sample shards, embedded Ray, local files.

ENRICH_MODEL=<hub id, folder or s3:// prefix> runs that model. Without it the demo runs the
small address model trained here (models/demo-address, `make demo-model`); only if that folder
is missing does it build the tiny random-weight checkpoint and say so loudly: outputs are then
schema-valid but meaningless.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq

from enrich.config import JobConfig
from enrich.logs import LEVELS, setup_logging

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo-address"
BANNER = """
###########################################################################
#  ENRICH_MODEL is not set: using the TINY RANDOM-WEIGHT Qwen3 checkpoint. #
#  Outputs are schema-valid (guided decoding) but MEANINGLESS; rows whose #
#  divisions/phone fail the checks are flagged (address_issue), not       #
#  rejected, so the enriched table has rows to look at.                   #
#  For real results:  ENRICH_MODEL=<hub id | folder | s3://...> make demo #
###########################################################################
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="samples/addresses", help="input shards folder")
    parser.add_argument("--output", default="demo-output/addresses", help="output folder")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=LEVELS,
                        help="INFO: the job's own lines; DEBUG adds Ray's, Ray Data's and vLLM's")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)  # before Ray starts: its workers inherit the levels

    model = os.environ.get("ENRICH_MODEL")
    if not model and (DEMO_MODEL / "config.json").exists():
        model = str(DEMO_MODEL)
    tiny = not model
    ours = tiny or model == str(DEMO_MODEL)  # a model of a few MB: little KV cache is plenty
    if not model:
        from enrich.tiny_checkpoint import build_tiny_checkpoint

        print(BANNER, file=sys.stderr, flush=True)
        model = str(build_tiny_checkpoint(Path(".cache") / "tiny-qwen3").resolve())

    from enrich.pipeline import run

    cfg = JobConfig.model_validate(
        {
            "input": args.samples,
            "output": args.output,
            "model": model,
            "task": "address",
            "id_column": "order_id",
            "overwrite": True,  # the demo replaces its previous output on every run
            # Random weights never name a real district: flag instead of reject (see banner).
            "task_options": {"flag_invalid": tiny},
            # Our small models need little KV cache, and a small one starts in 2 s instead of 11.
            "engine": {"gpu_memory_utilization": 0.1 if ours else None, "max_model_len": 1024, "batch_size": 32},
            # Write (and commit) every engine batch: 260 rows never fill the 50,000-row default, and
            # status lines come as batches are written.
            "row_group_rows": 32,
            # A random model's invalid answers are not worth a second, doubled attempt.
            "sampling": {"max_attempts": 1 if tiny else 2},
        }
    )
    summary = run(cfg)
    print()
    print(summary.human())
    if summary.rows_ok:
        enriched = pq.read_table(args.output)  # part files only: _rejects/ etc. are skipped
        print(f"\n{enriched.num_rows} enriched rows in {args.output}/, e.g.:")
        columns = ["order_id", "province", "city", "district", "adcode", "phone_norm"]
        columns += ["address_issue"] if tiny else []
        for row in enriched.select(columns).slice(0, 3).to_pylist():
            print("  ", row)
    if summary.output_rows_rejected:  # no rejects file at all when no row was rejected
        rejects = pq.read_table(f"{args.output}/_rejects")
        print(f"\n{rejects.num_rows} rejected rows in {args.output}/_rejects/, e.g.:")
        for row in rejects.select(["row_id", "reason", "message"]).slice(0, 3).to_pylist():
            print("  ", row)
    if tiny:
        print(BANNER, file=sys.stderr)
    return 0 if summary.invariant_ok else 1


if __name__ == "__main__":
    sys.exit(main())
