"""Keyword tagging job: backfill 1..N keyword tags over a text corpus
(--max-keywords, --require-grounded).

    ray job submit --working-dir . -- python jobs/backfill_keywords.py \
        --input s3://corpus/2026-11-21/ --output s3://tags/2026-11-21 \
        --model s3://models/qwen3-0.6b-keywords --max-keywords 8

Under `ray job submit` RAY_ADDRESS is set, so the job runs on that cluster; run directly it
starts an embedded Ray. Any `enrich run` option works; `--task` is fixed to `keywords`.
"""

from __future__ import annotations

import sys

from enrich.cli import main

if __name__ == "__main__":  # vLLM spawns processes: nothing may run at import
    sys.exit(main(["run", "--task", "keywords", *sys.argv[1:]]))
