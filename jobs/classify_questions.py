"""Question classification job with a LoRA adapter; each row gets one of --labels
(default: the 14 MMLU-Pro categories), decoded under a choice constraint.

    ray job submit --working-dir . -- python jobs/classify_questions.py \
        --input s3://questions/ --output s3://labels/ --text-column question \
        --model Qwen/Qwen3-0.6B --adapter s3://adapters/mmlu-pro-lora

Under `ray job submit` RAY_ADDRESS is set, so the job runs on that cluster; run directly it
starts an embedded Ray. Any `enrich run` option works; `--task` is fixed to `classify`.
"""

from __future__ import annotations

import sys

from enrich.cli import main

if __name__ == "__main__":  # vLLM spawns processes: nothing may run at import
    sys.exit(main(["run", "--task", "classify", *sys.argv[1:]]))
