"""Column names: internal working columns (dropped on write), lineage and rejects schema.

Internal names start with `_enrich_` so they cannot clash with a user's input columns.
"""

from __future__ import annotations

import pyarrow as pa

# Working columns carried between stages.
ROW_ID = "_enrich_row_id"
SOURCE_FILE = "_enrich_source_file"
ROW_INDEX = "_enrich_row_index"
SHARD_ROWS = "_enrich_shard_rows"  # rows in the shard, on the shard's last chunk; else -1
TEXT = "_enrich_text"
REASON = "_enrich_reason"  # reject reason, null while the row is still good
MESSAGE = "_enrich_message"
PROMPT_TOKEN_IDS = "_enrich_prompt_token_ids"
PROMPT_TOKENS = "_enrich_prompt_tokens"
RAW_OUTPUT = "_enrich_raw_output"
FINISH_REASON = "_enrich_finish_reason"
OUTPUT_TOKENS = "_enrich_output_tokens"
ATTEMPTS = "_enrich_attempts"
OUTPUT_JSON = "_enrich_output_json"  # validated output, canonical JSON, before typing
TASK = "_enrich_task"  # the task (label) a row is for: a multi-task run fans rows out per task

WORKING = [
    ROW_ID, SOURCE_FILE, ROW_INDEX, SHARD_ROWS, TEXT, REASON, MESSAGE, PROMPT_TOKEN_IDS,
    PROMPT_TOKENS, RAW_OUTPUT, FINISH_REASON, OUTPUT_TOKENS, ATTEMPTS, OUTPUT_JSON, TASK,
]

# Lineage columns on every enriched row.
LINEAGE_SCHEMA = pa.schema(
    [
        ("enrich_row_id", pa.string()),
        ("enrich_source_file", pa.string()),
        ("enrich_row_index", pa.int64()),
        ("enrich_model", pa.string()),
        ("enrich_model_revision", pa.string()),
        ("enrich_adapter", pa.string()),
        ("enrich_task", pa.string()),
        ("enrich_task_version", pa.string()),
        ("enrich_fingerprint", pa.string()),
        ("enrich_prompt_tokens", pa.int32()),
        ("enrich_output_tokens", pa.int32()),  # all attempts: the generation work the row cost
        ("enrich_attempts", pa.int32()),
    ]
)

# The rejects table has one fixed schema, whether or not a run has rejects; the input
# row travels as JSON so any input schema fits and rejects can be fed back as input.
REJECTS_SCHEMA = pa.schema(
    [
        ("row_id", pa.string()),
        ("source_file", pa.string()),
        ("row_index", pa.int64()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("raw_output", pa.string()),
        ("attempts", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("input_text", pa.string()),
        ("input_json", pa.string()),
        ("enrich_task", pa.string()),
        ("enrich_fingerprint", pa.string()),
    ]
)


def replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """`table` with column `name` replaced by `values`."""
    return table.set_column(table.schema.get_field_index(name), name, values)
