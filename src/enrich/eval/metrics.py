"""Scores for the three built-in tasks: pure functions over Python values (no I/O, no engine).

Conventions shared by all tasks:
- a prediction of None is a reject (the row failed decoding or the checks): it is scored as wrong,
  never skipped;
- predictions and golds are parallel sequences; a length mismatch or an empty corpus is a ValueError
  (an average over nothing would be a made-up number).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from enrich.eval.gold import ADDRESS_FIELDS

REJECTED = "rejected"  # the confusion matrix's extra column for None predictions


def _check_parallel(preds: Sequence[Any], golds: Sequence[Any]) -> int:
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold examples")
    if not golds:
        raise ValueError("nothing to score: no gold examples")
    return len(golds)


# ---------------------------------------------------------------- address
def exact_match(pred: Mapping[str, Any] | None, gold: Mapping[str, Any]) -> bool:
    """The seed's score: the parsed JSON equals the gold on the six address fields.

    Values are compared as they are (no stripping, no normalisation). A missing key counts as a
    mismatch; keys beyond the six (e.g. the pipeline's *_norm columns) are ignored.
    """
    if pred is None:
        return False
    return all(f in pred and pred[f] == gold[f] for f in ADDRESS_FIELDS)


def address_scores(
    preds: Sequence[Mapping[str, Any] | None], golds: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """{"n", "exact_match": fraction, "per_field": {field: accuracy}, "misses": [indexes]}.

    A None prediction (a reject) is wrong on every field; `misses` lists the indexes of the rows
    that are not an exact match, in order.
    """
    n = _check_parallel(preds, golds)
    right = dict.fromkeys(ADDRESS_FIELDS, 0)
    misses: list[int] = []
    for i, (pred, gold) in enumerate(zip(preds, golds)):
        if not exact_match(pred, gold):
            misses.append(i)
        if pred is not None:
            for f in ADDRESS_FIELDS:
                right[f] += f in pred and pred[f] == gold[f]
    return {
        "n": n,
        "exact_match": (n - len(misses)) / n,
        "per_field": {f: right[f] / n for f in ADDRESS_FIELDS},
        "misses": misses,
    }


# ---------------------------------------------------------------- keywords
class PRF(NamedTuple):
    precision: float
    recall: float
    f1: float


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def normalize_keyword(s: str) -> str:
    """NFKC (full-width -> half-width: 'ＡＩ　' -> 'AI '), then strip, then lowercase (casefold)."""
    return unicodedata.normalize("NFKC", s).strip().casefold()


def _unique(items: Sequence[str], normalized: bool) -> list[str]:
    """In order, duplicates dropped (under the chosen comparison), blanks dropped."""
    seen: dict[str, None] = {}
    for item in items:
        key = normalize_keyword(item) if normalized else item
        if key.strip():
            seen.setdefault(key, None)
    return list(seen)


def _counts(
    pred: Sequence[str] | None, gold: Sequence[str], k: int, normalized: bool
) -> tuple[int, int, int] | None:
    """(hits, predictions kept, gold keywords) or None when the gold is empty."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    gold_set = set(_unique(gold, normalized))
    if not gold_set:
        return None
    top = _unique(pred or [], normalized)[:k]
    return sum(p in gold_set for p in top), len(top), len(gold_set)


def prf_at_k(
    pred: Sequence[str] | None, gold: Sequence[str], k: int, *, normalized: bool = False
) -> PRF | None:
    """Precision, recall and F1 of the top-k predictions against the gold keywords.

    - Predictions are de-duplicated first (order kept), then cut at k: a duplicate is counted
      once and takes no slot. Blank keywords are dropped from both sides; gold duplicates too.
    - precision = hits / predictions kept (<= k, not k itself); recall = hits / gold keywords;
      F1 = harmonic mean, 0 when both are 0.
    - No predictions (or None, a reject): (0, 0, 0).
    - Empty gold: None -- undefined, whatever was predicted; such rows are left out of the
      averages of `keyword_scores` and counted there as "skipped".
    - `normalized=True` compares `normalize_keyword` forms (width, case, outer spaces); the
      default compares the strings exactly.
    """
    counts = _counts(pred, gold, k, normalized)
    if counts is None:
        return None
    hits, n_pred, n_gold = counts
    p = hits / n_pred if n_pred else 0.0
    r = hits / n_gold
    return PRF(p, r, _f1(p, r))


def _averages(
    preds: Sequence[Sequence[str] | None], golds: Sequence[Sequence[str]], k: int, normalized: bool
) -> tuple[dict[str, float], dict[str, float], int]:
    hits = n_pred = n_gold = 0
    per_doc: list[PRF] = []
    for pred, gold in zip(preds, golds):
        counts = _counts(pred, gold, k, normalized)
        if counts is None:
            continue
        hits, n_pred, n_gold = hits + counts[0], n_pred + counts[1], n_gold + counts[2]
        p = counts[0] / counts[1] if counts[1] else 0.0
        r = counts[0] / counts[2]
        per_doc.append(PRF(p, r, _f1(p, r)))
    m = len(per_doc)
    micro_p = hits / n_pred if n_pred else 0.0
    micro_r = hits / n_gold if n_gold else 0.0
    micro = PRF(micro_p, micro_r, _f1(micro_p, micro_r))
    macro = PRF(*(sum(d[i] for d in per_doc) / m if m else 0.0 for i in range(3)))
    return micro._asdict(), macro._asdict(), len(golds) - m


def keyword_scores(
    preds: Sequence[Sequence[str] | None], golds: Sequence[Sequence[str]], k: int
) -> dict[str, Any]:
    """Corpus scores at k, exact and normalized, each as micro and macro P/R/F1.

    micro: hits, predictions and gold keywords summed over the corpus, then divided;
    macro: the mean of the per-document P, R and F1 (`prf_at_k`).
    Rows with empty gold are skipped (see `prf_at_k`): "n" counts the scored rows.
    Returns {"k", "n", "skipped", "exact": {"micro": {...}, "macro": {...}}, "normalized": {...}}.
    """
    _check_parallel(preds, golds)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out: dict[str, Any] = {"k": k}
    for variant, normalized in (("exact", False), ("normalized", True)):
        micro, macro, skipped = _averages(preds, golds, k, normalized)
        out[variant] = {"micro": micro, "macro": macro}
        out["n"], out["skipped"] = len(golds) - skipped, skipped
    return out


# ---------------------------------------------------------------- classify
def classification_scores(
    preds: Sequence[str | None], golds: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    confusion[i][j] counts gold labels[i] predicted as labels[j]; its last column (index
    len(labels), named "rejected") counts None predictions. A reject is wrong: it lowers
    accuracy and recall, not any class's precision. Precision of a never-predicted class and
    recall of a class without support are 0.0. A gold or predicted label outside `labels` is a
    ValueError (the classify task only emits its labels, so one would be a bug upstream).
    """
    n = _check_parallel(preds, golds)
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    if len(index) != len(labels):
        raise ValueError(f"duplicate labels in {labels}")
    confusion = [[0] * (len(labels) + 1) for _ in labels]
    for pred, gold in zip(preds, golds):
        if gold not in index:
            raise ValueError(f"gold label {gold!r} is not one of {labels}")
        if pred is not None and pred not in index:
            raise ValueError(f"predicted label {pred!r} is not one of {labels} (use None for a reject)")
        confusion[index[gold]][len(labels) if pred is None else index[pred]] += 1
    per_class: dict[str, dict[str, float | int]] = {}
    for i, label in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(row[i] for row in confusion)
        support = sum(confusion[i])
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        per_class[label] = {"precision": p, "recall": r, "f1": _f1(p, r), "support": support}
    correct = sum(confusion[i][i] for i in range(len(labels)))
    return {
        "n": n,
        "accuracy": correct / n,
        "rejected": sum(row[-1] for row in confusion),
        "per_class": per_class,
        "confusion": confusion,
        "labels": labels,
        "columns": labels + [REJECTED],
    }
