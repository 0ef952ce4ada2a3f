"""Loaders for the shared gold sets (see shared/data/README.md).

Every loader takes a path and an optional `limit` (the first N examples, after filtering) and
returns a list of (text, gold) pairs. Files are read as UTF-8; blank lines are skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def shared_data() -> Path:
    """The shared gold sets beside the clone (../shared/data); ENRICH_SHARED_DATA points elsewhere."""
    return Path(os.environ.get("ENRICH_SHARED_DATA") or Path(__file__).resolve().parents[4] / "shared" / "data")


ADDRESS_FIELDS: tuple[str, ...] = ("province", "city", "district", "specific_location", "name", "phone")

AddressExample = tuple[str, dict[str, str]]
KeywordExample = tuple[str, list[str]]
LabelExample = tuple[str, str]


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line.rstrip("\r\n")


def _json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object")
        yield number, obj


def load_address(path: str | Path, limit: int | None = None) -> list[AddressExample]:
    """Chat-format JSONL (`test_with_system.jsonl`) -> (user text, gold dict of the six fields).

    The gold is `json.loads` of the assistant message, as the seed tutorial scored it.
    """
    _check_limit(limit)
    out: list[AddressExample] = []
    for number, obj in _json_lines(path):
        if limit is not None and len(out) >= limit:
            break
        by_role = {m.get("role"): m.get("content") for m in obj.get("messages", [])}
        text, answer = by_role.get("user"), by_role.get("assistant")
        if not isinstance(text, str) or not isinstance(answer, str):
            raise ValueError(f"{path}:{number}: needs a user and an assistant message")
        gold = json.loads(answer)
        if not isinstance(gold, dict) or set(gold) != set(ADDRESS_FIELDS):
            raise ValueError(f"{path}:{number}: gold keys {sorted(gold)} != {sorted(ADDRESS_FIELDS)}")
        out.append((text, gold))
    return out


def load_csl_tsv(path: str | Path, limit: int | None = None) -> list[KeywordExample]:
    """CSL keyword-generation TSV: `to keywords` <TAB> text <TAB> keywords joined by `_`."""
    _check_limit(limit)
    out: list[KeywordExample] = []
    for number, line in _lines(path):
        if limit is not None and len(out) >= limit:
            break
        cols = line.split("\t")
        if len(cols) != 3:
            raise ValueError(f"{path}:{number}: expected 3 tab-separated columns, got {len(cols)}")
        out.append((cols[1], [k for k in cols[2].split("_") if k.strip()]))
    return out


def load_fewclue_csl(path: str | Path, limit: int | None = None) -> list[KeywordExample]:
    """FewCLUE CSL JSON lines -> (abstract, keywords), only rows with label "1" (true keywords)."""
    _check_limit(limit)
    out: list[KeywordExample] = []
    for number, obj in _json_lines(path):
        if limit is not None and len(out) >= limit:
            break
        if str(obj.get("label")) != "1":
            continue
        abst, keywords = obj.get("abst"), obj.get("keyword")
        if not isinstance(abst, str) or not isinstance(keywords, list):
            raise ValueError(f"{path}:{number}: needs `abst` (string) and `keyword` (list)")
        out.append((abst, [str(k) for k in keywords]))
    return out


def load_mmlu_pro(path: str | Path, limit: int | None = None) -> list[LabelExample]:
    """MMLU-Pro questions JSONL -> (question, category)."""
    _check_limit(limit)
    out: list[LabelExample] = []
    for number, obj in _json_lines(path):
        if limit is not None and len(out) >= limit:
            break
        question, category = obj.get("question"), obj.get("category")
        if not isinstance(question, str) or not isinstance(category, str):
            raise ValueError(f"{path}:{number}: needs `question` and `category` strings")
        out.append((question, category))
    return out
