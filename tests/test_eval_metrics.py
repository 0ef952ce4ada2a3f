"""Metric functions against hand-computed cases (enrich.eval.metrics) and the gold loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enrich.eval.gold import load_address, load_csl_tsv, load_fewclue_csl, load_mmlu_pro
from enrich.eval.metrics import (
    PRF,
    address_scores,
    classification_scores,
    exact_match,
    keyword_scores,
    normalize_keyword,
    prf_at_k,
)

GOLD = {
    "province": "天津市", "city": "天津市", "district": "河西区",
    "specific_location": "珠江道21号", "name": "慕容修远", "phone": "22323185576",
}


# ---------------------------------------------------------------- address
def test_exact_match() -> None:
    assert exact_match(dict(GOLD), GOLD)
    assert exact_match({**GOLD, "province_norm": "天津市", "adcode": "120103"}, GOLD)  # extra keys ignored
    assert not exact_match(None, GOLD)
    assert not exact_match({**GOLD, "name": "慕容修远 "}, GOLD)  # no stripping: JSON equality
    assert not exact_match({k: v for k, v in GOLD.items() if k != "phone"}, GOLD)  # a missing key
    assert not exact_match({**GOLD, "phone": 22323185576}, GOLD)  # a number is not the string


def test_address_scores_per_field_and_rejects() -> None:
    golds = [GOLD] * 4
    preds = [
        dict(GOLD),  # right
        {**GOLD, "city": "天津", "district": "河西"},  # 4 of 6 fields right
        None,  # a reject: wrong on every field
        {**GOLD, "phone": "023-1234567"},  # 5 of 6 right
    ]
    s = address_scores(preds, golds)
    assert s["n"] == 4
    assert s["exact_match"] == 0.25
    assert s["misses"] == [1, 2, 3]
    assert s["per_field"] == {
        "province": 0.75, "city": 0.5, "district": 0.5, "specific_location": 0.75, "name": 0.75, "phone": 0.5,
    }


def test_address_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="predictions for"):
        address_scores([None], [GOLD, GOLD])
    with pytest.raises(ValueError, match="nothing to score"):
        address_scores([], [])


# ---------------------------------------------------------------- keywords
def test_normalize_keyword() -> None:
    assert normalize_keyword("  ＡＩ芯片　") == "ai芯片"  # full-width letters and space, outer spaces
    assert normalize_keyword("Deep Learning") == "deep learning"
    assert normalize_keyword("１２３") == "123"


def test_prf_at_k_hand_computed() -> None:
    gold = ["神经网络", "深度学习", "图像识别", "卷积"]
    # top-3 = 神经网络 (hit), 支持向量机 (miss), 卷积 (hit): P 2/3, R 2/4, F1 = 2PR/(P+R) = 4/7.
    p, r, f1 = prf_at_k(["神经网络", "支持向量机", "卷积", "深度学习"], gold, 3)  # type: ignore[misc]
    assert (p, r) == pytest.approx((2 / 3, 1 / 2))
    assert f1 == pytest.approx(4 / 7)
    # k larger than the predictions: precision over the predictions made, not over k.
    assert prf_at_k(["卷积"], gold, 5) == PRF(1.0, 0.25, pytest.approx(0.4))
    assert prf_at_k(["a", "b"], gold, 2) == PRF(0.0, 0.0, 0.0)  # P = R = 0: F1 0, no division by zero


def test_prf_at_k_duplicates_counted_once() -> None:
    gold = ["卷积", "池化"]
    # 卷积 twice: counted once and takes one slot, so the top-2 are 卷积 and 池化.
    assert prf_at_k(["卷积", "卷积", "池化"], gold, 2) == PRF(1.0, 1.0, 1.0)
    assert prf_at_k(["卷积", "卷积"], gold, 5) == PRF(1.0, 0.5, pytest.approx(2 / 3))
    assert prf_at_k(["卷积"], ["卷积", "卷积"], 5) == PRF(1.0, 1.0, 1.0)  # gold duplicates too
    # duplicates under normalization only collapse in the normalized variant
    assert prf_at_k(["CNN", "ｃｎｎ"], ["cnn"], 2) == PRF(0.0, 0.0, 0.0)
    assert prf_at_k(["CNN", "ｃｎｎ"], ["cnn"], 2, normalized=True) == PRF(1.0, 1.0, 1.0)


def test_prf_at_k_empty_cases() -> None:
    assert prf_at_k([], ["卷积"], 3) == PRF(0.0, 0.0, 0.0)  # nothing predicted
    assert prf_at_k(None, ["卷积"], 3) == PRF(0.0, 0.0, 0.0)  # a reject
    assert prf_at_k(["", "  "], ["卷积"], 3) == PRF(0.0, 0.0, 0.0)  # blanks are no predictions
    assert prf_at_k(["卷积"], [], 3) is None  # empty gold: undefined, whatever was predicted
    assert prf_at_k([], [], 3) is None
    with pytest.raises(ValueError, match="k must be"):
        prf_at_k(["卷积"], ["卷积"], 0)


def test_keyword_scores_micro_macro_and_skips() -> None:
    preds = [["a", "b", "c"], ["x"], None, ["A "], ["q"]]
    golds = [["a", "b"], ["x", "y", "z", "w"], ["m"], ["a"], []]
    s = keyword_scores(preds, golds, 3)
    assert (s["k"], s["n"], s["skipped"]) == (3, 4, 1)  # the empty gold is skipped everywhere
    # exact: hits 2+1+0+0 = 3, predictions 3+1+0+1 = 5, gold 2+4+1+1 = 8
    micro = s["exact"]["micro"]
    assert micro["precision"] == pytest.approx(3 / 5)
    assert micro["recall"] == pytest.approx(3 / 8)
    assert micro["f1"] == pytest.approx(2 * 0.6 * 0.375 / 0.975)
    # per-doc P: 2/3, 1, 0, 0; R: 1, 1/4, 0, 0; F1: 0.8, 0.4, 0, 0
    macro = s["exact"]["macro"]
    assert macro["precision"] == pytest.approx((2 / 3 + 1) / 4)
    assert macro["recall"] == pytest.approx(1.25 / 4)
    assert macro["f1"] == pytest.approx(1.2 / 4)
    # normalized: "A " matches "a" -> one more hit
    nmicro = s["normalized"]["micro"]
    assert (nmicro["precision"], nmicro["recall"]) == pytest.approx((4 / 5, 4 / 8))
    assert s["normalized"]["macro"]["precision"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)


def test_keyword_scores_all_gold_empty() -> None:
    s = keyword_scores([["a"]], [[]], 5)
    assert (s["n"], s["skipped"]) == (0, 1)
    assert s["exact"]["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert s["exact"]["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


# ---------------------------------------------------------------- classify
def test_classification_scores_confusion() -> None:
    labels = ["law", "math", "physics"]
    golds = ["law", "law", "math", "math", "math", "physics"]
    preds = ["law", "math", "math", None, "physics", None]
    s = classification_scores(preds, golds, labels)
    assert s["labels"] == labels and s["columns"] == labels + ["rejected"]
    assert s["confusion"] == [
        [1, 1, 0, 0],  # law: right once, once taken for math
        [0, 1, 1, 1],  # math: right, physics, rejected
        [0, 0, 0, 1],  # physics: rejected
    ]
    assert len(s["confusion"]) == len(labels) and all(len(row) == len(labels) + 1 for row in s["confusion"])
    assert s["accuracy"] == pytest.approx(2 / 6)
    assert s["rejected"] == 2 and s["n"] == 6
    assert s["per_class"]["law"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert s["per_class"]["math"]["precision"] == 0.5  # predicted twice, right once
    assert s["per_class"]["math"]["recall"] == pytest.approx(1 / 3)  # the reject counts against recall
    # predicted once, never right; gold once, only rejected
    assert s["per_class"]["physics"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_classification_scores_edge_cases() -> None:
    s = classification_scores(["a", "a"], ["a", "a"], ["a", "b"])
    assert s["accuracy"] == 1.0
    assert s["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}  # no support
    assert s["confusion"] == [[2, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="gold label 'c'"):
        classification_scores(["a"], ["c"], ["a", "b"])
    with pytest.raises(ValueError, match="predicted label 'c'"):
        classification_scores(["c"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="duplicate labels"):
        classification_scores(["a"], ["a"], ["a", "a"])


# ---------------------------------------------------------------- loaders (on small files)
def test_loaders(tmp_path: Path) -> None:
    chat = tmp_path / "addr.jsonl"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "天津市河西区珠江道21号"},
            {"role": "assistant", "content": json.dumps(GOLD, ensure_ascii=False)}]
    chat.write_text((json.dumps({"messages": msgs}, ensure_ascii=False) + "\n") * 3 + "\n", encoding="utf-8")
    assert load_address(chat) == [("天津市河西区珠江道21号", GOLD)] * 3
    assert len(load_address(chat, limit=2)) == 2

    tsv = tmp_path / "csl.tsv"
    tsv.write_text("to keywords\t文本一\t甲_乙丙\nto keywords\t文本二\t丁\n", encoding="utf-8")
    assert load_csl_tsv(tsv) == [("文本一", ["甲", "乙丙"]), ("文本二", ["丁"])]
    assert load_csl_tsv(tsv, limit=1) == [("文本一", ["甲", "乙丙"])]

    few = tmp_path / "few.json"
    rows = [{"id": 0, "abst": "假", "keyword": ["x"], "label": "0"}, {"id": 1, "abst": "真", "keyword": ["y"], "label": "1"}]
    few.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    assert load_fewclue_csl(few) == [("真", ["y"])]  # label "0" rows are dropped

    mmlu = tmp_path / "mmlu.jsonl"
    mmlu.write_text(json.dumps({"question_id": 1, "question": "Q?", "category": "law"}) + "\n", encoding="utf-8")
    assert load_mmlu_pro(mmlu) == [("Q?", "law")]
    assert load_mmlu_pro(mmlu, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_mmlu_pro(mmlu, limit=-1)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": msgs[:2]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="assistant"):
        load_address(bad)
