"""Address normalization job, for `ray job submit` (or run directly: embedded Ray).

    ray job submit --working-dir . -- python jobs/normalize_addresses.py \
        --input 's3://raw/2026-11-21/*.jsonl' --output s3://enriched/addresses/2026-11-21 \
        --model s3://models/qwen3-0.6b-address

Under `ray job submit` RAY_ADDRESS is set, so the job runs on that cluster. Any `enrich run`
option works here; `--task` is fixed to `address`.
"""

from __future__ import annotations

import sys

from enrich.cli import main

if __name__ == "__main__":  # vLLM spawns processes: nothing may run at import
    sys.exit(main(["run", "--task", "address", *sys.argv[1:]]))
