"""Prepare: check each row's text, render the chat prompt and tokenize it, outside the engine.

Rows that cannot be sent (no text, prompt over the token budget) are marked rejected here,
so the engine never sees them and never fails on them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from enrich import columns as C
from enrich.config import JobConfig
from enrich.model_store import local_tokenizer_path
from enrich.tasks import Task, task_for


@lru_cache(maxsize=4)
def load_tokenizer(model: str, revision: str | None, s3_endpoint: str | None) -> Any:
    # Only the tokenizer's files: prepare tasks never load the weights.
    path = local_tokenizer_path(model, s3_endpoint)
    cls = declared_tokenizer_class(path)
    if cls is None:
        from transformers import AutoTokenizer

        cls = AutoTokenizer
    return cls.from_pretrained(path, revision=revision)


# (model_type, tokenizer_class) pairs whose class AutoTokenizer loads as named: checked
# against AutoTokenizer (same class, prompts and ids) in tests/test_prepare_tokenizer.py. For
# other model types AutoTokenizer may substitute the class it registers for the model type
# (transformers' MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS), so those go through it.
DIRECT_TOKENIZERS = {("qwen3", "TokenizersBackend"), ("qwen3", "Qwen2Tokenizer")}


def declared_tokenizer_class(path: str) -> Any | None:
    """The tokenizer class a local checkpoint names, when it is one of DIRECT_TOKENIZERS:
    AutoTokenizer resolves the same class, but imports torch on the way, about 3 s of CPU in
    every prepare worker, taken from the engines starting beside it (bench/tokenizer_load.py).
    None (AutoTokenizer decides): a hub id, no local config, or any other model type or class."""
    try:
        name = json.loads((Path(path) / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
        model_type = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or (model_type, name) not in DIRECT_TOKENIZERS:
        return None
    import transformers

    return getattr(transformers, name, None)  # a transformers without it: AutoTokenizer decides


def render_prompt(tokenizer: Any, task: Task, row: dict[str, Any]) -> str:
    messages = [
        {"role": "system", "content": task.system_prompt},
        {"role": "user", "content": task.render_user(row)},
    ]
    # Qwen3: thinking off, the fine-tuned models answer with the JSON directly.
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def _truncated(
    tokenizer: Any, task: Task, row: dict[str, Any], length: int, budget: int
) -> list[int] | None:
    """Prompt ids with the row's text cut (by its own tokens) until the prompt fits; None when
    even an empty text would not fit."""
    text_ids = tokenizer(row["text"], add_special_tokens=False).input_ids
    overhead = length - len(text_ids)  # system prompt, template, chat markup
    keep = budget - overhead
    for _ in range(3):  # token boundaries can shift when re-encoding: shrink until it fits
        if keep <= 0:
            break
        cut = tokenizer.decode(text_ids[:keep], skip_special_tokens=True)
        prompt = render_prompt(tokenizer, task, {**row, "text": cut})
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        if len(ids) <= budget:
            return ids
        keep -= len(ids) - budget
    return None


def prepare_batch(table: pa.Table, cfg: JobConfig) -> pa.Table:
    """Add prompt token ids (null for rejected rows) and mark unsendable rows."""
    task = task_for(cfg)
    tokenizer = load_tokenizer(cfg.model, cfg.model_revision, cfg.s3_endpoint)
    texts = table.column(C.TEXT).to_pylist()
    reasons = table.column(C.REASON).to_pylist()
    messages = table.column(C.MESSAGE).to_pylist()
    input_names = [n for n in table.column_names if not n.startswith("_enrich_")]
    inputs = table.select(input_names).to_pylist() if input_names else [{}] * table.num_rows

    prompts: dict[int, str] = {}
    for i, text in enumerate(texts):
        if reasons[i] is not None:
            continue
        if text is None or not text.strip():
            reasons[i], messages[i] = "empty_text", "text is null or blank"
            continue
        try:
            prompts[i] = render_prompt(tokenizer, task, {**inputs[i], "text": text})
        except (KeyError, ValueError) as exc:  # e.g. a template column missing in this row
            reasons[i], messages[i] = "bad_input", f"cannot render the prompt: {exc}"

    token_ids: list[list[int] | None] = [None] * table.num_rows
    counts: list[int | None] = [None] * table.num_rows
    budget = cfg.engine.max_model_len - cfg.sampling.max_tokens
    if prompts:
        order = list(prompts)
        encoded = tokenizer([prompts[i] for i in order], add_special_tokens=False).input_ids
        for i, ids in zip(order, encoded):
            if len(ids) > budget and cfg.on_too_long == "truncate":
                ids = _truncated(tokenizer, task, {**inputs[i], "text": texts[i]}, len(ids), budget) or ids
            counts[i] = len(ids)
            if len(ids) > budget:
                reasons[i] = "too_long"
                messages[i] = (
                    f"prompt has {len(ids)} tokens; budget is {budget} "
                    f"(max_model_len {cfg.engine.max_model_len} - max_tokens {cfg.sampling.max_tokens})"
                )
            else:
                token_ids[i] = ids

    table = C.replace(table, C.REASON, pa.array(reasons, pa.string()))
    table = C.replace(table, C.MESSAGE, pa.array(messages, pa.string()))
    table = table.append_column(C.PROMPT_TOKEN_IDS, pa.array(token_ids, pa.list_(pa.int32())))
    return table.append_column(C.PROMPT_TOKENS, pa.array(counts, pa.int32()))
