"""Question -> one category label, decoded as a choice (LoRA classifier, MMLU-Pro categories)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from enrich.tasks.base import DomainError, Task

MMLU_PRO_CATEGORIES: tuple[str, ...] = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)

# Few-shot examples shown in the system prompt; only those whose label is in the set are used.
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Which data structure gives O(1) average-time lookup by key?", "computer science"),
    ("What is the derivative of x^3 + 2x with respect to x?", "math"),
    ("Under what conditions can a contract be voided for duress?", "law"),
    ("Which organelle is the site of cellular respiration?", "biology"),
    ("What happens to demand when the price of a normal good rises?", "economics"),
)


def _category_model(max_chars: int) -> type[BaseModel]:
    return create_model(
        "Category",
        __config__=ConfigDict(extra="forbid"),
        __doc__="The one category a question belongs to.",
        category=(str, Field(..., min_length=1, max_length=max_chars, description="Category label")),
    )


Category = _category_model(max(map(len, MMLU_PRO_CATEGORIES)))


def system_prompt(labels: Sequence[str]) -> str:
    shots = [(q, c) for q, c in EXAMPLES if c in labels][:3]
    lines = [
        "You are a question classifier. Read the user's question and answer with the one "
        "category it belongs to. Answer with the category name only, exactly as listed.",
        "",
        "Categories: " + ", ".join(labels),
    ]
    if shots:
        lines += ["", "Examples:"]
        for question, category in shots:
            lines += [f"Question: {question}", f"Category: {category}"]
    return "\n".join(lines)


def render_user(row: Mapping[str, Any]) -> str:
    return str(row["text"])


def _make_check(labels: frozenset[str]) -> Callable[[BaseModel, Mapping[str, Any]], BaseModel]:
    def check(record: BaseModel, row: Mapping[str, Any]) -> BaseModel:
        value = getattr(record, "category")
        if value not in labels:
            raise DomainError(f"category {value!r} is not one of the {len(labels)} labels")
        return record

    return check


def make_classify_task(labels: Sequence[str] | None = None) -> Task:
    chosen = tuple(MMLU_PRO_CATEGORIES if labels is None else (s.strip() for s in labels))
    if not chosen or not all(chosen):
        raise ValueError("classify needs at least one non-blank label")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"duplicate labels in {list(chosen)}")
    model = Category if labels is None else _category_model(max(map(len, chosen)))
    return Task(
        name="classify",
        version="1",
        description=f"Question -> one of {len(chosen)} categories (choice-constrained decoding).",
        output_model=model,
        # Labels appear in the system prompt and in `choices`: both feed the fingerprint.
        system_prompt=system_prompt(chosen),
        render_user=render_user,
        check=_make_check(frozenset(chosen)),
        choices=chosen,
    )


CLASSIFY_TASK = make_classify_task()
