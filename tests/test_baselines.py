"""Rule-based baselines (enrich.eval.baselines): hand-written cases, then the full shared gold sets,
whose scores are pinned to what was measured (± TOL) and printed (`pytest -s`) for the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from enrich.eval.baselines import majority_class, rule_based_address, textrank_keywords, tfidf_keywords
from enrich.eval.gold import load_address, load_csl_tsv, load_fewclue_csl, load_mmlu_pro
from enrich.eval.metrics import address_scores, classification_scores, keyword_scores
from enrich.tasks.classify import MMLU_PRO_CATEGORIES
from tests.conftest import shared_file

# The baselines are deterministic (no sampling, fixed data): pinned to the measured values.
# Rounding them to 4 places is within 5e-5; a change in a baseline or a loader moves them more.
TOL = 0.0005
K = 5  # the published CLUE CSL baseline's k


def _gold(relative: str) -> Path:
    return shared_file(relative)


# ---------------------------------------------------------------- hand-written cases
def test_rule_based_address_cases() -> None:
    assert rule_based_address("浙江省杭州市西湖区文三路123号5楼 收件人：张三 手机13812345678") == {
        "province": "浙江省", "city": "杭州市", "district": "西湖区",
        "specific_location": "文三路123号5楼", "name": "张三", "phone": "13812345678",
    }
    # a municipality names province and city; the name comes first, glued to the address
    assert rule_based_address("收货人：申屠雅婧北京市海淀区成府路23号B座5层，电话010-62751234") == {
        "province": "北京市", "city": "北京市", "district": "海淀区",
        "specific_location": "成府路23号B座5层", "name": "申屠雅婧", "phone": "010-62751234",
    }
    # no cue word: the leftover CJK run is the name; a functional zone as the district
    got = rule_based_address("马翠英;20957452668;苏州市工业园区星湖街218号")
    assert (got["province"], got["city"], got["district"]) == ("江苏省", "苏州市", "工业园区")
    assert (got["name"], got["phone"], got["specific_location"]) == ("马翠英", "20957452668", "星湖街218号")
    # a district without its city: the city is implied; a name glued to the location's end
    got = rule_based_address("电话：021-5591772 闵行区虹梅路289号华虹大厦5楼叶欣怡")
    assert (got["province"], got["city"], got["district"]) == ("上海市", "上海市", "闵行区")
    assert (got["specific_location"], got["name"]) == ("虹梅路289号华虹大厦5楼", "叶欣怡")
    # nothing recognisable: every field empty, no exception
    assert set(rule_based_address("hello")) == {"province", "city", "district", "specific_location", "name", "phone"}
    assert all(v == "" for v in rule_based_address("hello").values())


def test_keyword_baselines_run() -> None:
    text = "深度学习在图像识别中的应用研究。本文提出一种基于卷积神经网络的图像识别方法，实验表明该方法有效。"
    for extract in (tfidf_keywords, textrank_keywords):
        got = extract(text, 3)
        assert 1 <= len(got) <= 3 and all(isinstance(k, str) and k for k in got)
    assert "图像识别" in tfidf_keywords(text, 5)


def test_majority_class_ties() -> None:
    assert majority_class(["b", "a", "b", "a", "c"]) == "a"  # tie a/b: alphabetically first
    assert majority_class(["b", "a", "b", "a", "c"], ["c", "b", "a"]) == "b"  # tie: first listed
    assert majority_class(["c", "a", "c"], ["a", "c"]) == "c"
    with pytest.raises(ValueError):
        majority_class([])


# ---------------------------------------------------------------- full shared gold sets
def test_address_rules_on_gold_set() -> None:
    rows = load_address(_gold("address/test_with_system.jsonl"))
    assert len(rows) == 400
    s = address_scores([rule_based_address(text) for text, _ in rows], [gold for _, gold in rows])
    print(f"\naddress rules (n={s['n']}): exact match {s['exact_match']:.4f}, per field {s['per_field']}")
    assert s["exact_match"] == pytest.approx(398 / 400, abs=TOL)
    for field, measured in {"province": 1.0, "city": 399 / 400, "district": 399 / 400,
                            "specific_location": 399 / 400, "name": 1.0, "phone": 1.0}.items():
        assert s["per_field"][field] == pytest.approx(measured, abs=TOL), field


# measured micro (P, R, F1) at k=5, exact match of keywords (jieba 0.42.1, pinned in pyproject)
KEYWORD_EXPECTED = {
    ("csl_kg/dev.tsv", "tfidf"): (0.1432, 0.1374, 0.1402),
    ("csl_kg/dev.tsv", "textrank"): (0.1081, 0.1036, 0.1058),
    ("fewclue_csl/test_public.json", "tfidf"): (0.0743, 0.1020, 0.0860),
    ("fewclue_csl/test_public.json", "textrank"): (0.0506, 0.0695, 0.0586),
}


@pytest.mark.parametrize(("relative", "method"), list(KEYWORD_EXPECTED))
def test_keyword_baselines_on_gold_sets(relative: str, method: str) -> None:
    path = _gold(f"keywords/{relative}")
    rows = load_csl_tsv(path) if path.suffix == ".tsv" else load_fewclue_csl(path)
    assert len(rows) == (1000 if path.suffix == ".tsv" else 1419)  # FewCLUE: the label "1" rows
    extract = tfidf_keywords if method == "tfidf" else textrank_keywords
    s = keyword_scores([extract(text, K) for text, _ in rows], [gold for _, gold in rows], K)
    micro, macro = s["exact"]["micro"], s["exact"]["macro"]
    print(f"\n{relative} {method}@{K} (n={s['n']}): micro {micro}, macro {macro}, "
          f"normalized micro {s['normalized']['micro']}")
    got = (micro["precision"], micro["recall"], micro["f1"])
    assert got == pytest.approx(KEYWORD_EXPECTED[(relative, method)], abs=TOL)


def test_majority_class_on_mmlu_pro() -> None:
    rows = load_mmlu_pro(_gold("classify/mmlu_pro_questions.jsonl"))
    assert len(rows) == 12032
    golds = [label for _, label in rows]
    top = majority_class(golds, MMLU_PRO_CATEGORIES)
    s = classification_scores([top] * len(golds), golds, MMLU_PRO_CATEGORIES)
    print(f"\nMMLU-Pro majority class {top!r} (n={s['n']}): accuracy {s['accuracy']:.4f}")
    assert top == "math"
    assert s["accuracy"] == pytest.approx(1351 / 12032, abs=1e-9)  # exact: a count, nothing to drift
    assert s["per_class"]["math"]["recall"] == 1.0
