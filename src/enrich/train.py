"""`enrich train`'s per-worker loop: TRL's SFTTrainer on prompt-completion rows, in Ray Train.

Each worker tokenizes the rows (train_data: the serving prompt, the engine's JSON), builds the
SFTTrainer (completion-only loss, eos `<|im_end|>`, no packing: CPU attention is SDPA), and
hands checkpoints to Ray Train through RayTrainReportCallback. A restarted run gets its last
checkpoint back from `ray.train.get_checkpoint()` and resumes the optimizer, schedule and data
order from it. Rank 0 then writes the final model or adapter and the loss history to OUTPUT.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from enrich.train_config import TrainConfig

log = logging.getLogger("enrich.train")
HISTORY = "train_history.json"


def lora_config(cfg: TrainConfig) -> Any:
    """A LoraConfig vLLM loads: no DoRA, no bias, no modules_to_save (PATTERNS 4.3)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=cfg.targets(), bias="none", task_type="CAUSAL_LM",
    )


def _progress_callback(tokens_per_row: float, world: int) -> Any:
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One line per logging step: step/total, loss, rows/s, tokens/s, ETA."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0, self.step0 = time.monotonic(), state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if not logs or not state.is_world_process_zero or not {"loss", "eval_loss"} & set(logs):
                return
            steps = state.global_step - self.step0
            secs = max(time.monotonic() - self.t0, 1e-9)
            rows = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * world / secs
            eta = (state.max_steps - state.global_step) * secs / max(steps, 1)
            loss = logs.get("loss", logs.get("eval_loss"))
            kind = "eval_loss" if "eval_loss" in logs else "loss"
            log.info("step %d/%d %s %.4f | %.1f rows/s %.0f tokens/s | ETA %dm%02ds", state.global_step,
                     state.max_steps, kind, loss if loss is not None else float("nan"), rows,
                     rows * tokens_per_row, eta // 60, eta % 60)

    return Progress()


def _sft_config(cfg: TrainConfig, out_dir: str, has_eval: bool) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=out_dir, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accumulation, learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=cfg.warmup_ratio,  # < 1: a ratio (transformers 5)
        weight_decay=cfg.weight_decay,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=10, logging_first_step=True,
        # Saving and evaluating line up (RayTrainReportCallback reports the eval metrics it saves with).
        eval_strategy="steps" if has_eval else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.eval_steps, save_total_limit=cfg.save_total_limit,
        completion_only_loss=True, eos_token="<|im_end|>", max_length=cfg.max_length, packing=False,
        bf16=cfg.dtype == "bfloat16", use_cpu=not cfg.use_gpu, report_to=[], dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker."""
    import ray.train
    import torch
    from datasets import Dataset
    from ray.train.huggingface.transformers import RayTrainReportCallback
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from enrich.model_store import local_model_path
    from enrich.tasks import build_task
    from enrich.train_data import tokenized_examples

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig.model_validate(config["cfg"])
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    ctx = ray.train.get_context()
    task = build_task(cfg.task)
    base = local_model_path(cfg.base, cfg.s3_endpoint)
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows, dropped = tokenized_examples(tokenizer, task, cfg.data, cfg.max_length, cfg.limit, cfg.s3_endpoint,
                                       keep_flagged=cfg.keep_flagged)
    tokens_per_row = sum(len(r["input_ids"]) for r in rows) / len(rows)
    log.info("%d training rows (%d over max_length %d dropped), %.0f tokens per row",
             len(rows), dropped, cfg.max_length, tokens_per_row)
    dataset = Dataset.from_list(rows)
    split = dataset.train_test_split(test_size=cfg.eval_split, seed=cfg.seed) if cfg.eval_split else None
    train_set, eval_set = (split["train"], split["test"]) if split else (dataset, None)

    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    work = tempfile.mkdtemp(prefix="enrich-train-")
    trainer = SFTTrainer(
        model=model, args=_sft_config(cfg, work, eval_set is not None), train_dataset=train_set,
        eval_dataset=eval_set, processing_class=tokenizer, peft_config=None if cfg.full else lora_config(cfg),
    )
    trainer.add_callback(_progress_callback(tokens_per_row, ctx.get_world_size()))
    trainer.add_callback(RayTrainReportCallback())
    resumed_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / "checkpoint" / "trainer_state.json").read_text())
            resumed_from = state["global_step"]
            log.info("resuming from the checkpoint at step %d", resumed_from)
            trainer.train(resume_from_checkpoint=os.path.join(folder, "checkpoint"))
    else:
        trainer.train()
    if ctx.get_world_rank() == 0:
        final = Path(work) / "final"
        trainer.save_model(str(final))  # an adapter (peft) or the full model
        (final / "training_args.bin").unlink(missing_ok=True)  # a pickle; the settings are in HISTORY
        if cfg.full:
            tokenizer.save_pretrained(str(final))
        history = {
            "rows": len(rows), "dropped": dropped, "tokens_per_row": tokens_per_row,
            "resumed_from_step": resumed_from, "global_step": trainer.state.global_step,
            "log_history": trainer.state.log_history, "config": cfg.model_dump(),
        }
        (final / HISTORY).write_text(json.dumps(history, indent=1), encoding="utf-8")
        publish(final, cfg.output, cfg.s3_endpoint)
    shutil.rmtree(work, ignore_errors=True)


def publish(local: Path, output: str, s3_endpoint: str | None) -> None:
    """Copy the final folder to OUTPUT (local or s3://); files first, the marker last, so a
    reader that waits for `_SUCCESS` never loads a half-written model."""
    from enrich.storage import filesystem, join, remove

    fs, path = filesystem(output, s3_endpoint)
    remove(fs, join(path, "_SUCCESS"))
    fs.makedirs(path, exist_ok=True)
    for f in sorted(local.iterdir()):
        if f.is_file():
            fs.put_file(str(f), join(path, f.name))
    with fs.open(join(path, "_SUCCESS"), "w") as fh:
        fh.write("")
