"""Custom-schema job (the 4B general model use case): your output schema (module:Class or a
JSON Schema file) and prompt template, typically from a YAML job spec.

    ray job submit --working-dir . -- python jobs/run_custom.py --spec job.yaml
    # job.yaml: input, output, model, task_options: {output_schema: schema.json,
    #           prompt_template: prompt.txt}   (paths relative to the working dir)

Under `ray job submit` RAY_ADDRESS is set, so the job runs on that cluster; run directly it
starts an embedded Ray. Any `enrich run` option works; `--task` is fixed to `custom`.
"""

from __future__ import annotations

import sys

from enrich.cli import main

if __name__ == "__main__":  # vLLM spawns processes: nothing may run at import
    sys.exit(main(["run", "--task", "custom", *sys.argv[1:]]))
