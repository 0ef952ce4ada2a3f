"""The subprocess side of the ceiling and peer runs: `python bench/run.py _worker SYSTEM
SPEC.json` calls worker_main. vLLM, Ray and enrich are imported inside the functions, so
importing this module (run.py does, to reach worker_main) stays light."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from inputs import read_rows

RUN_PY = Path(__file__).resolve().with_name("run.py")


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
    t_written = time.time()  # the last row written: where the wall time to the last row ends
    return {
        "t_written": t_written,
        "binding": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto (vLLM default)"),
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


def worker_ceiling_all_cores(spec: dict[str, Any]) -> dict[str, Any]:
    """One raw vLLM process per core (or GPU), each bound to it, over its share of the rows
    (contiguous); their stdout is ours, so the harness sees every engine's ready line."""
    rows = read_rows(spec["input"])
    n = spec["engines"]
    share = math.ceil(len(rows) / n)
    out_dir = Path(spec["out_dir"])
    children = []
    for k in range(n):
        d = out_dir / f"engine-{k}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "input.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[k * share : (k + 1) * share])
        child = {**spec, "input": str(d / "input.jsonl"), "out_dir": str(d), "result": str(d / "result.json")}
        (d / "spec.json").write_text(json.dumps(child))
        env = dict(os.environ)
        if spec["gpu"]:
            env["CUDA_VISIBLE_DEVICES"] = str(k)
        else:  # the binding measured best for two engines: compute threads on a core each
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(sorted(os.sched_getaffinity(0))[k])
        cmd = [sys.executable, str(RUN_PY), "_worker", "ceiling", str(d / "spec.json")]
        children.append((d, subprocess.Popen(cmd, env=env)))
    if any(p.wait() != 0 for _, p in children):
        raise RuntimeError("a ceiling engine process failed; see its lines in the log")
    res = [json.loads((d / "result.json").read_text()) for d, _ in children]
    with open(out_dir / "outputs.jsonl", "w", encoding="utf-8") as f:
        for d, _ in children:
            f.write((d / "outputs.jsonl").read_text(encoding="utf-8"))
    return {
        "t_start": min(r["t_start"] for r in res),
        "t_prepared": max(r["t_prepared"] for r in res),
        # The machine's engine start is its slowest engine's LLM(); steady from its first ready.
        "engine_start_s": max(r["t_ready"] - r["t_imported"] for r in res),
        "t_ready": min(r["t_ready"] for r in res),
        "t_done": max(r["t_done"] for r in res),
        "t_written": max(r["t_written"] for r in res),
        "binding": [r["binding"] for r in res],
        "rows": sum(r["rows"] for r in res),
        "output_tokens": sum(r["output_tokens"] for r in res),
        "prompt_tokens_mean": sum(r["prompt_tokens_mean"] * r["rows"] for r in res) / max(len(rows), 1),
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

    from enrich.config import EngineConfig
    from enrich.tasks import build_task

    task = build_task("address")
    engines = spec.get("engines", 1)
    # address="local": a fresh embedded cluster like enrich's, never one a stale
    # /tmp/ray/ray_current_cluster points at (ray.init() then refuses num_gpus).
    if spec["gpu"]:
        ray.init(address="local")
    else:  # logical GPUs, one per engine, so the GPU-shaped engine stage schedules on a CPU node
        ray.init(address="local", num_gpus=engines)
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
    # Two engines' default bundles (1 CPU + 1 GPU each) would hold both CPUs of a 2-core node
    # and starve every other stage: on CPU each engine reserves 0.75 CPU (bookkeeping only).
    pg = None
    runtime_env = None
    if engines > 1 and not spec["gpu"]:
        pg = {"bundles": [{"GPU": 1, "CPU": (len(os.sched_getaffinity(0)) - 0.5) / engines}], "strategy": "PACK"}
        # vLLM's auto binding gives every engine the same core (it reserves one for the engine
        # core process and binds the worker to the rest, per process): two engines then share one
        # core. Ray Data LLM passes one runtime_env to all its stages' actors, so a per-engine
        # core is not possible; unbound single-threaded workers let the kernel spread them.
        runtime_env = {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}}
    # Batches in flight per engine actor: enrich's own depth for the same batch size and
    # max_num_seqs, and no queue beyond it. Ray 2.60's default lets 16 tasks wait at one actor
    # (2 x max_concurrent_batches 8): the engine ready first took all 16 tasks of a 2,000-row
    # input while the other sat idle (RESULTS.md, the 2,000-row run of 2026-12-07).
    in_flight = EngineConfig(batch_size=spec["batch_size"], max_num_seqs=spec["engine"]["max_num_seqs"]).batches_in_flight()
    config = vLLMEngineProcessorConfig(
        model_source=spec["model"],
        engine_kwargs=engine_kwargs,
        # An int n is an autoscaling pool of 1..n engines for this processor (Ray 2.60's
        # get_concurrency): it never grew past one engine here. (n, n) is a fixed pool of n.
        concurrency=(engines, engines),
        batch_size=spec["batch_size"],
        max_concurrent_batches=in_flight,
        max_tasks_in_flight_per_actor=in_flight,
        chat_template_stage={"chat_template_kwargs": {"enable_thinking": False}, **stage},
        tokenize_stage={**stage} or True,
        # Tuned as a user would: vLLM already returns the text; the detokenize stage only
        # decodes every output a second time.
        detokenize_stage=False,
        **({"placement_group_config": pg} if pg else {}),
        **({"runtime_env": runtime_env} if runtime_env else {}),
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
    # Input in blocks of exactly batch_size rows (read_json gives one block per file), as a user
    # who sized the blocks would have it: one block is one engine batch. Evenly split blocks
    # (`from_items(override_num_blocks=...)`: 57 rows for 400 / 7) were bundled in pairs up to
    # batch_size, so 400 rows made 4 engine tasks, all taken by the engine ready first; the
    # other engine, idle once the input was done, was shut down (the 400-row trial of 2026-12-07).
    import pyarrow as pa

    rows = pa.Table.from_pylist(read_rows(spec["input"]))
    size = spec["batch_size"]
    ds = processor(ray.data.from_arrow([rows.slice(i, size) for i in range(0, rows.num_rows, size)]))
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
        "binding": "nobind, OMP_NUM_THREADS=1 (runtime_env)" if runtime_env else "auto (vLLM default)",
        "batches_in_flight": in_flight,
    }


def worker_main(system: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    workers = {"ceiling": worker_ceiling, "ceiling-all-cores": worker_ceiling_all_cores,
               "peer": worker_peer, "peer-all-cores": worker_peer}  # fmt: skip
    result = workers[system](spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0
