"""Task definitions (keywords, classify, custom): schemas compile in xgrammar as vLLM would,
validation accepts good outputs and rejects bad ones with the right reason. No engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

from enrich.arrow_types import arrow_schema
from enrich.prepare import render_prompt
from enrich.tasks.base import Task
from enrich.tasks.classify import MMLU_PRO_CATEGORIES, make_classify_task
from enrich.tasks.custom import load_output_model, make_custom_task, model_from_json_schema
from enrich.tasks.keywords import KeywordList, KeywordTags, make_keywords_task
from enrich.validate import RejectReason, validate_output

TEXT = "Ray Data 与 vLLM 的批量推理：用小模型把原始文本变成带类型的 Parquet 表。"


@pytest.fixture(scope="session")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def compiler(tokenizer: Any) -> Any:
    import xgrammar as xgr

    return xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=151936))


def compile_task(compiler: Any, task: Task) -> Any:
    """Compile the task's decoding constraint the way vLLM's xgrammar backend does."""
    from vllm.v1.structured_output.backend_xgrammar import has_xgrammar_unsupported_json_features
    from vllm.v1.structured_output.utils import choice_as_grammar

    if task.choices:
        return compiler.compile_grammar(choice_as_grammar(list(task.choices)))
    schema = task.json_schema()
    assert has_xgrammar_unsupported_json_features(schema) is False
    return compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)


def grammar_accepts(compiled: Any, text: str) -> bool:
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(compiled)
    return bool(matcher.accept_string(text)) and matcher.is_completed()


def check(task: Task, raw: str, row: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    return validate_output(task, raw, "stop", row or {"text": TEXT})


def kw(*words: str) -> str:
    return json.dumps({"keywords": list(words)}, ensure_ascii=False)


# --- keywords -----------------------------------------------------------------------------


def test_keywords_schema_compiles_and_bounds_items(compiler: Any) -> None:
    task = make_keywords_task()
    schema = task.json_schema()
    assert schema["properties"]["keywords"]["maxItems"] == 8
    assert schema["properties"]["keywords"]["minItems"] == 1
    assert schema["properties"]["keywords"]["items"]["maxLength"] == 24
    compiled = compile_task(compiler, task)
    assert grammar_accepts(compiled, kw("Ray", "vLLM"))
    assert not grammar_accepts(compiled, kw(*[f"k{i}" for i in range(9)]))
    assert not grammar_accepts(compiled, kw())


def test_keywords_prompt_and_columns() -> None:
    task = make_keywords_task()
    assert task.name == "keywords" and task.version == "1"
    assert task.output_model is KeywordList and task.written_model is KeywordTags
    assert task.system_prompt.startswith("你是一个关键词提取助手")
    assert task.render_user({"text": "abc"}) == "提取文本关键词：\nabc"
    schema = arrow_schema(task.written_model)
    assert schema.field("keywords").type == pa.list_(pa.string())
    assert schema.field("keywords_dropped").type == pa.int64()


def test_keywords_dedupe_strip_width_and_case() -> None:
    record, reason, _ = check(make_keywords_task(), kw(" Ray ", "ray", "ＲＡＹ", "vLLM", "  ", "Parquet"))
    assert reason is None
    assert record.keywords == ["Ray", "vLLM", "Parquet"]
    assert record.keywords_dropped == 3


def test_keywords_too_many_or_too_long_is_schema_violation() -> None:
    task = make_keywords_task(max_keywords=3)
    assert task.json_schema()["properties"]["keywords"]["maxItems"] == 3
    assert task.spec_digest() != make_keywords_task().spec_digest()
    _, reason, message = check(task, kw("a", "b", "c", "d"))
    assert reason is RejectReason.SCHEMA_VIOLATION and "keywords" in message
    _, reason, _ = check(task, kw("x" * 25))
    assert reason is RejectReason.SCHEMA_VIOLATION
    _, reason, _ = check(task, kw())
    assert reason is RejectReason.SCHEMA_VIOLATION
    _, reason, _ = check(task, '{"keywords": ["a"')
    assert reason is RejectReason.INVALID_JSON


def test_keywords_all_blank_is_domain_check() -> None:
    _, reason, message = check(make_keywords_task(), kw(" ", "\u3000"))
    assert reason is RejectReason.DOMAIN_CHECK and "blank" in message


def test_keywords_grounded_counts_drops_and_rejects_ungrounded() -> None:
    task = make_keywords_task(require_grounded=True)
    assert task.spec_digest() != make_keywords_task().spec_digest()
    record, reason, _ = check(task, kw("ray data", "ＶＬＬＭ", "批量推理", "GPU", "区块链", "Ray Data"))
    assert reason is None
    assert record.keywords == ["ray data", "VLLM", "批量推理"]
    assert record.keywords_dropped == 3  # GPU, 区块链 not in the text; "Ray Data" a duplicate
    _, reason, message = check(task, kw("GPU", "区块链"))
    assert reason is RejectReason.DOMAIN_CHECK and "none of the 2" in message


# --- classify -----------------------------------------------------------------------------


def test_classify_labels_choices_and_grammar(compiler: Any) -> None:
    task = make_classify_task()
    assert task.choices == MMLU_PRO_CATEGORIES and len(task.choices) == 14
    assert task.name == "classify" and task.version == "1"
    compiled = compile_task(compiler, task)
    assert grammar_accepts(compiled, "computer science")
    assert not grammar_accepts(compiled, "astrology")
    # the output model's own schema must also be xgrammar-clean (it is in the fingerprint)
    from vllm.v1.structured_output.backend_xgrammar import has_xgrammar_unsupported_json_features

    assert has_xgrammar_unsupported_json_features(task.json_schema()) is False


def test_classify_validation() -> None:
    task = make_classify_task()
    record, reason, _ = check(task, "computer science")
    assert reason is None and record.category == "computer science"
    record, reason, _ = check(task, " law\n")
    assert reason is None and record.category == "law"
    _, reason, message = check(task, "astrology")
    assert reason is RejectReason.DOMAIN_CHECK and "astrology" in message
    _, reason, _ = check(task, "")
    assert reason is RejectReason.SCHEMA_VIOLATION


def test_classify_custom_labels_change_fingerprint() -> None:
    default, custom = make_classify_task(), make_classify_task(["spam", "ham"])
    assert custom.choices == ("spam", "ham")
    assert "spam, ham" in custom.system_prompt
    assert custom.spec_digest() != default.spec_digest()
    assert check(custom, "ham")[1] is None
    assert check(custom, "math")[1] is RejectReason.DOMAIN_CHECK
    with pytest.raises(ValueError, match="duplicate"):
        make_classify_task(["a", "a"])
    with pytest.raises(ValueError, match="non-blank"):
        make_classify_task([])


def test_classify_few_shot_prompt_renders(tokenizer: Any) -> None:
    task = make_classify_task()
    for label in MMLU_PRO_CATEGORIES:
        assert label in task.system_prompt
    assert task.system_prompt.count("Question: ") == 3
    prompt = render_prompt(tokenizer, task, {"text": "What is 2 + 2?"})
    assert prompt.startswith("<|im_start|>system\n" + task.system_prompt + "<|im_end|>\n")
    assert "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n" in prompt
    assert prompt.endswith("<think>\n\n</think>\n\n")


# --- custom -------------------------------------------------------------------------------

ORDER_SCHEMA: dict[str, Any] = {
    "title": "Order",
    "type": "object",
    "properties": {
        "customer": {"type": "string", "maxLength": 40, "description": "who ordered"},
        "priority": {"type": "string", "enum": ["low", "high"]},
        "total": {"type": "number", "minimum": 0},
        "paid": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city"],
        },
        "items": {
            "type": "array",
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string", "maxLength": 10}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["customer", "priority", "total", "paid", "tags", "address", "items"],
}
GOOD_ORDER = {
    "customer": "Ada", "priority": "high", "total": 12.5, "paid": True, "tags": ["gift"],
    "address": {"city": "Berlin", "zip": "10115"}, "items": [{"sku": "A1", "qty": 2}],
}


class Invoice(BaseModel):
    """A class the `module:Class` spec points at."""

    number: str = Field(..., max_length=16)
    amount: float


@pytest.fixture()
def order_schema(tmp_path: Path) -> str:
    path = tmp_path / "order.json"
    path.write_text(json.dumps(ORDER_SCHEMA), encoding="utf-8")
    return str(path)


def test_custom_json_schema_model_types(order_schema: str, compiler: Any) -> None:
    model = load_output_model(order_schema)
    assert model.__name__ == "Order"
    assert model.model_fields["customer"].description == "who ordered"
    schema = arrow_schema(model)
    assert schema.field("customer").type == pa.string()
    assert schema.field("priority").type == pa.string()
    assert schema.field("total").type == pa.float64()
    assert schema.field("paid").type == pa.bool_()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("address").type == pa.struct([("city", pa.string()), ("zip", pa.string())])
    assert schema.field("items").type == pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64())]))
    task = make_custom_task(order_schema, None, None)
    compiled = compile_task(compiler, task)
    assert grammar_accepts(compiled, json.dumps(GOOD_ORDER))  # any_whitespace=False: ", " and ": "


def test_custom_validation(order_schema: str) -> None:
    task = make_custom_task(order_schema, None, None)
    record, reason, _ = check(task, json.dumps(GOOD_ORDER))
    assert reason is None
    assert record.model_dump(mode="json") == GOOD_ORDER
    for bad, where in [
        ({**GOOD_ORDER, "priority": "urgent"}, "priority"),
        ({**GOOD_ORDER, "tags": ["x"] * 5}, "tags"),
        ({**GOOD_ORDER, "address": {"zip": "10115"}}, "address.city"),
        ({**GOOD_ORDER, "extra": 1}, "extra"),
    ]:
        _, reason, message = check(task, json.dumps(bad))
        assert reason is RejectReason.SCHEMA_VIOLATION and where in message, (bad, message)


def test_custom_optional_fields_and_refs() -> None:
    model = model_from_json_schema(Invoice.model_json_schema() | {"required": ["number"]})
    assert model.model_validate({"number": "7"}).amount is None
    nested = model_from_json_schema(
        {
            "type": "object",
            "$defs": {"Line": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
            "properties": {"lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}}},
            "required": ["lines"],
        }
    )
    assert arrow_schema(nested).field("lines").type == pa.list_(pa.struct([("n", pa.int64())]))


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        ({"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}, "/properties/a"),
        ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "null"}}}}, "/properties/a/items"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "x", "maxLength": 3}}}, "/properties/a"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}}, "/properties/a"),
        ({"type": "array", "items": {"type": "string"}}, "/"),
    ],
)
def test_custom_unsupported_schema_names_pointer(schema: dict[str, Any], pointer: str) -> None:
    with pytest.raises(ValueError, match=pointer):
        model_from_json_schema(schema)


def test_custom_module_class_spec(compiler: Any) -> None:
    assert load_output_model(f"{__name__}:Invoice") is Invoice
    task = make_custom_task(f"{__name__}:Invoice", None, "Extract the invoice.")
    compile_task(compiler, task)
    record, reason, _ = check(task, '{"number": "INV-1", "amount": 9.5}')
    assert reason is None and record == Invoice(number="INV-1", amount=9.5)
    with pytest.raises(ValueError, match="not a pydantic"):
        load_output_model(f"{__name__}:GOOD_ORDER")
    with pytest.raises(ValueError, match="module:Class"):
        load_output_model("no_colon_here")


def test_custom_template_and_version(order_schema: str, tmp_path: Path) -> None:
    template = tmp_path / "prompt.txt"
    template.write_text("Shop: {shop}\nOrder text:\n{text}\n{{literal}}", encoding="utf-8")
    task = make_custom_task(order_schema, str(template), None)
    assert task.render_user({"text": "2x A1 for Ada", "shop": "north"}) == (
        "Shop: north\nOrder text:\n2x A1 for Ada\n{literal}"
    )
    with pytest.raises(ValueError, match="prompt template needs column 'shop'"):
        task.render_user({"text": "2x A1 for Ada"})
    assert task.version.startswith("c-") and len(task.version) == 10
    assert '"customer"' in task.system_prompt  # default system prompt shows the schema
    template.write_text("Order:\n{text}", encoding="utf-8")
    changed = make_custom_task(order_schema, str(template), None)
    assert changed.version != task.version
    assert make_custom_task(order_schema, None, None).render_user({"text": "t"}) == "t"
    template.write_text('Answer like {"a": 1}: {text}', encoding="utf-8")
    with pytest.raises(ValueError, match="column name"):
        make_custom_task(order_schema, str(template), None)
