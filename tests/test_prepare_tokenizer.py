"""prepare's tokenizer: the class tokenizer_config.json names, loaded without AutoTokenizer's
torch import, must render and tokenize exactly as AutoTokenizer's does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from enrich.prepare import DIRECT_TOKENIZERS, declared_tokenizer_class, load_tokenizer, render_prompt
from enrich.tasks import build_task

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo-address"
TEXTS = ["浙江省杭州市西湖区文三路90号 张伟 13800000000", "收件人李四，广东深圳南山区科技园 电话 13912345678", "𠀾龘 é ✓"]


def _with_class(src: Path, dst: Path, tokenizer_class: str | None, model_type: str = "qwen3") -> Path:
    """The tokenizer files of `src`, with tokenizer_config.json naming `tokenizer_class`
    (None: naming none) and config.json saying `model_type`."""
    dst.mkdir()
    for name in ("tokenizer.json", "chat_template.jinja"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("tokenizer_class", None)
    if tokenizer_class is not None:
        config["tokenizer_class"] = tokenizer_class
    (dst / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    model_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    (dst / "config.json").write_text(json.dumps({**model_config, "model_type": model_type}), encoding="utf-8")
    return dst


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("AutoTokenizer was used")


@pytest.mark.parametrize(("model_type", "tokenizer_class"), sorted(DIRECT_TOKENIZERS))
@pytest.mark.parametrize("source", ["tiny", "demo"])
def test_declared_class_renders_and_tokenizes_as_autotokenizer(
    source: str, model_type: str, tokenizer_class: str, tiny_model: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every pair loaded without AutoTokenizer: Qwen2Tokenizer is what the released Qwen3
    checkpoints name, TokenizersBackend what ours name."""
    import transformers
    from transformers import AutoTokenizer

    path = _with_class(tiny_model if source == "tiny" else DEMO_MODEL, tmp_path / "tok", tokenizer_class, model_type)
    assert declared_tokenizer_class(str(path)) is getattr(transformers, tokenizer_class)
    load_tokenizer.cache_clear()
    with monkeypatch.context() as patched:  # the direct path must not go through AutoTokenizer
        patched.setattr(AutoTokenizer, "from_pretrained", _refuse)
        ours = load_tokenizer(str(path), None, None)
    reference = AutoTokenizer.from_pretrained(str(path))
    assert type(ours) is type(reference)
    task = build_task("address")
    for text in TEXTS:
        prompt = render_prompt(ours, task, {"text": text})
        assert prompt == render_prompt(reference, task, {"text": text})
        assert ours(prompt, add_special_tokens=False).input_ids == reference(prompt, add_special_tokens=False).input_ids
    load_tokenizer.cache_clear()


@pytest.mark.parametrize(
    ("model_type", "tokenizer_class"),
    [
        ("qwen3", None),  # no class named: AutoTokenizer picks one from the model type
        ("qwen3", "NoSuchTokenizerClass"),
        ("qwen3", "AutoConfig"),  # in transformers, not a tokenizer
        # AutoTokenizer replaces the class DeepSeek-V3 checkpoints name by its own for the type:
        # the named class would tokenize differently, silently
        ("deepseek_v3", "LlamaTokenizerFast"),
        ("qwen2", "Qwen2Tokenizer"),  # not checked here: AutoTokenizer decides
    ],
)
def test_any_other_pair_goes_through_autotokenizer(
    model_type: str, tokenizer_class: str | None, tiny_model: Path, tmp_path: Path
) -> None:
    path = _with_class(tiny_model, tmp_path / "tok", tokenizer_class, model_type)
    assert declared_tokenizer_class(str(path)) is None


def test_a_hub_id_or_unreadable_config_goes_through_autotokenizer(tmp_path: Path) -> None:
    assert declared_tokenizer_class("Qwen/Qwen3-0.6B") is None  # no local files: AutoTokenizer resolves it
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))
    assert declared_tokenizer_class(str(tmp_path)) is None  # no config.json: no model type
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    assert declared_tokenizer_class(str(tmp_path)) is not None  # the same folder, now complete
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": ["Qwen2Tokenizer"]}))
    assert declared_tokenizer_class(str(tmp_path)) is None  # not a name
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    assert declared_tokenizer_class(str(tmp_path)) is None


@pytest.mark.parametrize(("model_type", "tokenizer_class"), sorted(DIRECT_TOKENIZERS))
def test_prepare_loads_its_tokenizer_without_importing_torch(
    model_type: str, tokenizer_class: str, tiny_model: Path, tmp_path: Path
) -> None:
    """The point of the declared class: a prepare worker does not pay torch's import (about
    3 s of CPU here, bench/tokenizer_load.py) while the engines start beside it. In a fresh
    process, as a worker is."""
    path = _with_class(tiny_model, tmp_path / "tok", tokenizer_class, model_type)
    code = (
        "import sys\n"
        "from enrich.prepare import load_tokenizer\n"
        f"tok = load_tokenizer({str(path)!r}, None, None)\n"
        "assert tok('x', add_special_tokens=False).input_ids\n"
        "print(sorted(m for m in ('torch', 'transformers.models.auto') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
