"""Fine-tune a model for the address task, for `ray job submit` (or run directly: embedded Ray).

    ray job submit --working-dir . -- python jobs/train_address.py \
        --data s3://enriched/addresses/2026-11-21 --base s3://models/qwen3-0.6b \
        --output s3://models/qwen3-0.6b-address-lora --num-workers 4 --use-gpu

Under `ray job submit` RAY_ADDRESS is set, so Ray Train runs its workers on that cluster
(one per GPU with --use-gpu). Any `enrich train` option works here; `--task` is fixed to
`address`. Rerunning the same command after a failure resumes from the last checkpoint.
"""

from __future__ import annotations

import sys

from enrich.cli import main

if __name__ == "__main__":  # Ray spawns processes: nothing may run at import
    sys.exit(main(["train", "--task", "address", *sys.argv[1:]]))
