"""Unit tests for enrich.validate: each model output becomes a typed record or a closed-set reject."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from enrich import columns as C
from enrich.config import JobConfig
from enrich.tasks import build_task
from enrich.tasks.address import AddressRecord
from enrich.validate import RejectReason, validate_batch, validate_output
from tests.conftest import shared_file

GOLD = "address/test_with_system.jsonl"  # under the shared data (tests.conftest.shared_file)
FIELDS = ["province", "city", "district", "specific_location", "name", "phone"]
TASK = build_task("address")
CFG = JobConfig.model_validate({"input": "in", "output": "out", "model": "m"})
GOOD = {
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "specific_location": "文三路90号",
    "name": "张伟",
    "phone": "13900000001",
}


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)


def validate(raw: str, finish: str | None = "stop") -> tuple[Any, RejectReason | None, str | None]:
    return validate_output(TASK, raw, finish, {"text": "some address"})


# ---------------------------------------------------------------- validate_output
def test_valid_json_gives_record() -> None:
    """A schema-valid JSON output is parsed into the task's record with no reason."""
    record, reason, message = validate(dumps(GOOD))
    assert (reason, message) == (None, None)
    assert isinstance(record, AddressRecord)
    assert record.model_dump(include=set(GOOD)) == GOOD  # extracted fields never overwritten


def test_empty_phone_and_dashes_allowed() -> None:
    """An empty phone (none in the text) and a landline with a dash pass."""
    for phone in ("", "0571-88886666", "+8613900000001"):
        record, reason, _ = validate(dumps({**GOOD, "phone": phone}))
        assert reason is None and record is not None and record.phone == phone


def test_truncated_output() -> None:
    """finish_reason 'length' is TRUNCATED even when the text happens to parse."""
    for raw in (dumps(GOOD)[:20], dumps(GOOD)):
        record, reason, message = validate(raw, finish="length")
        assert record is None
        assert reason is RejectReason.TRUNCATED
        assert message == "output cut off at max_tokens"


@pytest.mark.parametrize("raw", ['{"province": "浙江省", ', "not json", "", '{"a": 1}}'])
def test_invalid_json(raw: str) -> None:
    """Output that does not parse as JSON is INVALID_JSON with the column in the message."""
    record, reason, message = validate(raw)
    assert record is None
    assert reason is RejectReason.INVALID_JSON
    assert message is not None and message.startswith("col ")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({k: v for k, v in GOOD.items() if k != "name"}, "name: Field required"),
        ({**GOOD, "specific_location": "路" * 65}, "specific_location: String should have at most 64"),
        ({**GOOD, "province": "省" * 17}, "province: String should have at most 16"),
        ({**GOOD, "phone": "139 0000 0001"}, "phone: String should match pattern"),
        ({**GOOD, "phone": "tel:13900000001"}, "phone: String should match pattern"),
        ({**GOOD, "phone": 13900000001}, "phone: Input should be a valid string"),
        ({**GOOD, "extra": "x"}, "extra: Extra inputs are not permitted"),
        ({**GOOD, "province": ""}, "province: String should have at least 1"),
    ],
)
def test_schema_violation(value: Any, where: str) -> None:
    """Missing keys, over-long strings, bad phone characters, extra keys: SCHEMA_VIOLATION."""
    record, reason, message = validate(dumps(value))
    assert record is None
    assert reason is RejectReason.SCHEMA_VIOLATION
    assert message is not None and where in message


def test_schema_violation_on_non_object() -> None:
    """A JSON array is valid JSON but not a record."""
    record, reason, message = validate('["浙江省"]')
    assert record is None and reason is RejectReason.SCHEMA_VIOLATION
    assert message is not None and message.startswith("<root>:")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({**GOOD, "province": "   "}, "province is blank"),
        ({**GOOD, "phone": "123456"}, "phone '123456' has 6 digits (7-15 expected)"),
        ({**GOOD, "phone": "1" * 16}, "has 16 digits (7-15 expected)"),
        ({**GOOD, "phone": "--+--"}, "has 0 digits"),
    ],
)
def test_domain_check(value: Any, expected: str) -> None:
    """Schema-valid outputs failing the address checks: DOMAIN_CHECK with the check's message."""
    record, reason, message = validate(dumps(value))
    assert record is None
    assert reason is RejectReason.DOMAIN_CHECK
    assert message is not None and expected in message


def test_phone_lengths_pass() -> None:
    """Mobile (11 digits) and landline (area code + 7-8 digits) numbers are accepted."""
    for phone in ("13900000001", "021-1234567", "0571-88886666"):
        record, reason, _ = validate(dumps({**GOOD, "phone": phone}))
        assert reason is None and record is not None


def test_reject_reasons_are_a_closed_set() -> None:
    """The reason values the rejects table may hold."""
    assert {r.value for r in RejectReason} == {
        "bad_input", "empty_text", "too_long", "engine_error", "truncated",
        "invalid_json", "schema_violation", "domain_check",
    }


# ---------------------------------------------------------------- validate_batch
def generated_table(rows: list[dict[str, Any]], source: str = "/data/in/a.jsonl") -> pa.Table:
    """The table validate_batch receives: input columns + read/prepare/generate working columns.

    Each row dict may set: order_id, text, reason, message, raw, finish.
    """
    n = len(rows)
    pending = [r.get("reason") is None for r in rows]
    return pa.table(
        {
            "order_id": pa.array([r.get("order_id", f"A{i}") for i, r in enumerate(rows)], pa.string()),
            "text": pa.array([r.get("text", "浙江省杭州市西湖区文三路90号 张伟 13900000001") for r in rows], pa.string()),
            C.ROW_ID: pa.array([r.get("order_id", f"A{i}") for i, r in enumerate(rows)], pa.string()),
            C.SOURCE_FILE: pa.array([source] * n, pa.string()),
            C.ROW_INDEX: pa.array(range(n), pa.int64()),
            C.SHARD_ROWS: pa.array([n] * n, pa.int64()),
            C.TEXT: pa.array([r.get("text", "浙江省杭州市西湖区文三路90号 张伟 13900000001") for r in rows], pa.string()),
            C.REASON: pa.array([r.get("reason") for r in rows], pa.string()),
            C.MESSAGE: pa.array([r.get("message") for r in rows], pa.string()),
            C.PROMPT_TOKEN_IDS: pa.array([[1, 2, 3] if p else None for p in pending], pa.list_(pa.int32())),
            C.PROMPT_TOKENS: pa.array([3 if p else None for p in pending], pa.int32()),
            C.RAW_OUTPUT: pa.array([r.get("raw") for r in rows], pa.string()),
            C.FINISH_REASON: pa.array([r.get("finish", "stop" if p else None) for r, p in zip(rows, pending)], pa.string()),
            C.OUTPUT_TOKENS: pa.array([40 if p else None for p in pending], pa.int32()),
            C.ATTEMPTS: pa.array([1 if p else 0 for p in pending], pa.int32()),
        }
    )


def test_validate_batch_typed_columns_and_reasons() -> None:
    """Good rows get typed values; rejected rows null outputs; earlier reasons are kept."""
    rows = [
        {"raw": dumps(GOOD)},
        {"raw": '{"province": "浙江'},
        {"raw": dumps(GOOD), "finish": "length"},
        {"reason": "empty_text", "message": "text is null or blank", "text": "  "},
        {"raw": dumps({**GOOD, "phone": "123"})},
        {"raw": dumps({k: v for k, v in GOOD.items() if k != "city"})},
        {"raw": dumps({**GOOD, "name": "李娜", "phone": ""})},
        {"reason": "engine_error", "message": "RuntimeError: boom"},
    ]
    table = generated_table(rows)
    out = validate_batch(table, CFG)

    assert out.num_rows == len(rows)
    assert out.column(C.REASON).to_pylist() == [
        None, "invalid_json", "truncated", "empty_text", "domain_check", "schema_violation", None, "engine_error",
    ]
    messages = out.column(C.MESSAGE).to_pylist()
    assert messages[0] is None and messages[6] is None
    assert messages[3] == "text is null or blank"
    assert messages[7] == "RuntimeError: boom"
    assert "city: Field required" in messages[5]
    # Output columns: typed strings, in the model's order, after the existing columns.
    assert out.column_names[: table.num_columns + len(FIELDS)] == table.column_names + FIELDS
    assert out.column_names[table.num_columns + len(FIELDS) :] == [
        "province_norm", "city_norm", "district_norm", "adcode", "phone_norm",
    ]
    for name in FIELDS:
        assert out.schema.field(name).type == pa.string()
    assert out.slice(0, 1).select(FIELDS).to_pylist() == [GOOD]
    assert out.column("name").to_pylist() == ["张伟", None, None, None, None, None, "李娜", None]
    assert out.column("phone").to_pylist()[6] == ""
    # The other columns pass through untouched.
    for name in table.column_names:
        if name not in (C.REASON, C.MESSAGE):
            assert out.column(name).equals(table.column(name)), name
    assert out.schema.field(C.REASON).type == pa.string()


def test_validate_batch_all_rejected_keeps_typed_null_columns() -> None:
    """Even with no good row the output columns exist, typed string, all null."""
    out = validate_batch(generated_table([{"raw": "nope"}, {"reason": "too_long", "message": "m"}]), CFG)
    assert out.column(C.REASON).to_pylist() == ["invalid_json", "too_long"]
    for name in FIELDS:
        assert out.schema.field(name).type == pa.string()
        assert out.column(name).null_count == 2


def test_validate_batch_null_raw_without_reason_is_rejected() -> None:
    """A pending row that somehow has no output text is rejected, not passed through."""
    out = validate_batch(generated_table([{"raw": None}]), CFG)
    assert out.column(C.REASON).to_pylist() == ["invalid_json"]
    assert out.column("province").to_pylist() == [None]


def test_validate_batch_empty_table() -> None:
    """A zero-row batch yields zero rows with the output columns."""
    out = validate_batch(generated_table([]), CFG)
    assert out.num_rows == 0
    assert [n for n in out.column_names if n in FIELDS] == FIELDS


# ---------------------------------------------------------------- gold answers
def test_gold_answers_all_valid() -> None:
    """Every gold answer of the shared address test set passes validation (schema + checks)."""
    lines = [line for line in shared_file(GOLD).read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) == 400
    failures = []
    for number, line in enumerate(lines, start=1):
        messages = json.loads(line)["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == TASK.system_prompt  # the prompt the model was trained on
        record, reason, message = validate_output(TASK, messages[2]["content"], "stop", {"text": messages[1]["content"]})
        if record is None:
            failures.append(f"line {number}: {reason} {message}")
        else:
            gold = json.loads(messages[2]["content"])
            assert record.model_dump(include=set(gold)) == gold
    assert failures == []
