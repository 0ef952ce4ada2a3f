"""Keyword tags over a corpus: raw text -> up to N short keywords (Qwen3-0.6B keyword model)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from enrich.tasks.base import DomainError, Task

DEFAULT_MAX_KEYWORDS = 8
KEYWORD_MAX_CHARS = 24

# Bounded items keep guided decoding finite; no uniqueItems (xgrammar lacks it): dedupe in check.
Keyword = Annotated[str, StringConstraints(min_length=1, max_length=KEYWORD_MAX_CHARS)]


def _keyword_list_model(max_keywords: int) -> type[BaseModel]:
    """`KeywordList` with maxItems = max_keywords (part of the schema, hence the fingerprint)."""
    return create_model(
        "KeywordList",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Keywords as the model emits them (before dedupe and grounding).",
        keywords=(list[Keyword], Field(..., min_length=1, max_length=max_keywords)),
    )


KeywordList = _keyword_list_model(DEFAULT_MAX_KEYWORDS)


class KeywordTags(BaseModel):
    """Written columns: cleaned keywords and how many of the model's keywords were dropped."""

    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(..., description="Stripped, NFKC-normalized, de-duplicated keywords.")
    keywords_dropped: int = Field(
        ..., ge=0, description="Model keywords not kept: blank, duplicate or (grounded mode) not in the text."
    )


def system_prompt(max_keywords: int) -> str:
    return (
        "你是一个关键词提取助手，负责从用户给出的文本中提取最能概括其主题的关键词。"
        f"关键词应简短（不超过{KEYWORD_MAX_CHARS}个字符）、互不重复，尽量使用文本中出现的词语，"
        f"最多{max_keywords}个。以JSON格式输出，包含的Key有keywords（关键词列表）。"
    )


def render_user(row: Mapping[str, Any]) -> str:
    return f"提取文本关键词：\n{row['text']}"


def _fold(s: str) -> str:
    """Case- and width-insensitive key: full-width 'ＡＩ' and 'ai' compare equal."""
    return unicodedata.normalize("NFKC", s).casefold()


def _make_check(require_grounded: bool) -> Callable[[BaseModel, Mapping[str, Any]], KeywordTags]:
    def check(record: BaseModel, row: Mapping[str, Any]) -> KeywordTags:
        raw: list[str] = list(getattr(record, "keywords"))
        kept: list[str] = []
        seen: set[str] = set()
        for kw in raw:
            clean = unicodedata.normalize("NFKC", kw).strip()
            key = clean.casefold()
            if clean and key not in seen:
                seen.add(key)
                kept.append(clean)
        if not kept:
            raise DomainError("all keywords are blank")
        if require_grounded:
            text = _fold(str(row.get("text") or ""))
            grounded = [kw for kw in kept if kw.casefold() in text]
            if not grounded:
                raise DomainError(f"none of the {len(kept)} keywords occur in the text")
            kept = grounded
        return KeywordTags(keywords=kept, keywords_dropped=len(raw) - len(kept))

    return check


def make_keywords_task(
    max_keywords: int = DEFAULT_MAX_KEYWORDS, require_grounded: bool = False
) -> Task:
    if max_keywords < 1:
        raise ValueError(f"max_keywords must be >= 1, got {max_keywords}")
    model = KeywordList if max_keywords == DEFAULT_MAX_KEYWORDS else _keyword_list_model(max_keywords)
    grounded = " Only keywords occurring in the text are kept." if require_grounded else ""
    return Task(
        name="keywords",
        # Grounding changes which rows pass but not prompt or schema, so it lives in the version.
        version="1-grounded" if require_grounded else "1",
        description=f"Text -> 1..{max_keywords} keyword tags (deduplicated).{grounded}",
        output_model=model,
        system_prompt=system_prompt(max_keywords),
        render_user=render_user,
        check=_make_check(require_grounded),
        columns_model=KeywordTags,
    )


KEYWORDS_TASK = make_keywords_task()
