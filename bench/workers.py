"""The subprocess side of the ceiling and peer runs: `python bench/run.py _worker SYSTEM
SPEC.json` calls worker_main. vLLM, Ray and enrich are imported inside the functions, so
importing this module (run.py does, to reach worker_main) stays light."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from inputs import read_rows


def worker_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """vLLM alone: render + tokenize every prompt, build LLM(), one generate() over all rows."""
    t_start = time.time()
    from enrich.prepare import load_tokenizer, render_prompt
    from enrich.tasks import build_task

    task = build_task("address")
    rows = read_rows(spec["input"])
    tokenizer = load_tokenizer(spec["model"], None, None)
    prompts = [render_prompt(tokenizer, task, row) for row in rows]
    token_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    t_prepared = time.time()

    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    t_imported = time.time()
    llm = LLM(model=spec["model"], **spec["engine"])
    t_ready = time.time()
    params = SamplingParams(**spec["sampling"], structured_outputs=StructuredOutputsParams(json=task.json_schema()))
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in token_ids], params, use_tqdm=False)
    t_done = time.time()

    n_tokens = 0
    with open(Path(spec["out_dir"]) / "outputs.jsonl", "w", encoding="utf-8") as f:
        for row, out in zip(rows, outputs):
            c = out.outputs[0]
            n_tokens += len(c.token_ids)
            rec = {"id": row["id"], "text": c.text, "finish_reason": c.finish_reason, "tokens": len(c.token_ids)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return {
        "t_start": t_start,
        "t_prepared": t_prepared,
        "t_imported": t_imported,
        "t_ready": t_ready,
        "t_done": t_done,
        "rows": len(rows),
        "output_tokens": n_tokens,
        "prompt_tokens_mean": sum(map(len, token_ids)) / max(len(token_ids), 1),
    }


def _peer_preprocess(row: dict[str, Any], system_prompt: str, schema_json: str, sampling: dict[str, Any]) -> dict:
    return {
        "id": row["id"],
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": row["text"]},
        ],
        # The schema travels as a JSON string: as a nested dict Arrow would unify the
        # properties' keys into one struct and hand vLLM nulls for the missing ones.
        "sampling_params": {**sampling, "structured_outputs": {"json": schema_json}},
    }


def _peer_postprocess(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "generated_text": row["generated_text"],
        "num_generated_tokens": row["num_generated_tokens"],
        "num_input_tokens": row["num_input_tokens"],
        "bench_done_at": time.time(),
    }


def worker_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """Ray Data LLM: read the shard as a Ray dataset, build_processor(vLLMEngineProcessorConfig),
    write Parquet. A logical GPU lets its GPU-shaped engine stage schedule on a CPU machine."""
    from functools import partial

    t_start = time.time()
    import ray
    from ray import cloudpickle
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig
    from vllm.config import StructuredOutputsConfig

    from enrich.tasks import build_task

    task = build_task("address")
    if spec["gpu"]:
        ray.init()
    else:
        ray.init(num_gpus=1)
    t_ray = time.time()
    engine_kwargs = dict(spec["engine"])
    # vllm.AsyncEngineArgs (unlike vllm.LLM) does not turn this dict into the config object.
    engine_kwargs["structured_outputs_config"] = StructuredOutputsConfig(**engine_kwargs["structured_outputs_config"])
    # On a small CPU node the engine bundle (1 CPU + 1 GPU) plus three CPU actor stages and
    # the read/map tasks at Ray's default of 1 CPU each cannot all be placed: Ray Data then
    # waits forever. `peer_stage_cpus` (0 = Ray's defaults) is what each of them reserves.
    cpus = spec.get("peer_stage_cpus") or None
    stage = {"num_cpus": cpus} if cpus else {}
    task_args = {"num_cpus": cpus} if cpus else {}
    config = vLLMEngineProcessorConfig(
        model_source=spec["model"],
        engine_kwargs=engine_kwargs,
        concurrency=1,
        batch_size=spec["batch_size"],
        chat_template_stage={"chat_template_kwargs": {"enable_thinking": False}, **stage},
        tokenize_stage={**stage} or True,
        detokenize_stage={**stage} or True,
    )
    # Ray pickles the preprocess and postprocess functions for its workers. By value, so that
    # those processes need not be able to import this module (bench/ is not a package).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    processor = build_processor(
        config,
        preprocess=partial(
            _peer_preprocess,
            system_prompt=task.system_prompt,
            schema_json=json.dumps(task.json_schema(), ensure_ascii=False),
            sampling=spec["sampling"],
        ),
        postprocess=_peer_postprocess,
        preprocess_map_kwargs=task_args or None,
        postprocess_map_kwargs=task_args or None,
    )
    ds = processor(ray.data.read_json(spec["input"], ray_remote_args=task_args or None))
    out = Path(spec["out_dir"]) / "output"
    ds.write_parquet(str(out))
    t_written = time.time()

    import pyarrow.parquet as pq

    table = pq.read_table(str(out), columns=["id", "generated_text", "num_generated_tokens", "num_input_tokens", "bench_done_at"])
    stamps = table.column("bench_done_at").to_pylist()
    tokens = table.column("num_generated_tokens").to_pylist()
    n_in = table.column("num_input_tokens").to_pylist()
    with open(Path(spec["out_dir"]) / "outputs.jsonl", "w", encoding="utf-8") as f:
        for rid, text in zip(table.column("id").to_pylist(), table.column("generated_text").to_pylist()):
            f.write(json.dumps({"id": rid, "text": text}, ensure_ascii=False) + "\n")
    return {
        "t_start": t_start,
        "t_ray": t_ray,
        "t_written": t_written,
        "rows": table.num_rows,
        "output_tokens": int(sum(tokens)),
        "prompt_tokens_mean": sum(n_in) / max(len(n_in), 1),
        "stamps": stamps,
        "tokens": tokens,
    }


def worker_main(system: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = {"ceiling": worker_ceiling, "peer": worker_peer}[system](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0
