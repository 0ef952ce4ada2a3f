"""NAACL-2019 per-field scoring: the BIO parser and the division-aware comparison (no engine)."""

from __future__ import annotations

import pytest

from enrich.eval.naacl import load_naacl, naacl_scores, parse_naacl
from tests.conftest import shared_file

BLOCKS = """浙 B-prov
江 I-prov
嘉 B-city
兴 I-city
市 I-city
秀 B-district
洲 I-district
区 I-district
194 B-houseno
栋 I-houseno

龙 B-town
港 I-town
镇 I-town
1097 B-roomno
"""


def test_blocks_become_text_and_the_first_span_of_each_scored_label() -> None:
    rows = list(parse_naacl(iter(BLOCKS.splitlines(keepends=True))))
    assert rows == [("浙江嘉兴市秀洲区194栋", {"province": "浙江", "city": "嘉兴市", "district": "秀洲区"}),
                    ("龙港镇1097", {})]


def test_a_span_ends_at_any_other_label() -> None:
    rows = list(parse_naacl(iter(["浙 B-prov\n", "X I-town\n", "江 I-prov\n"])))
    assert rows == [("浙X江", {"province": "浙"})]


def test_a_malformed_line_is_named_by_file_line_and_column() -> None:
    with pytest.raises(ValueError, match=r"t\.txt:2:1: expected"):
        list(parse_naacl(iter(["浙 B-prov\n", "江\n"]), "t.txt"))


def test_a_value_is_right_when_it_names_the_gold_span_s_division() -> None:
    golds = [{"province": "浙江", "city": "嘉兴市", "district": "秀洲区"}, {"district": "义乌"}, {"city": "杭州"}]
    preds = [{"province": "浙江省", "city": "嘉兴", "district": "南湖区"},  # short forms match; wrong district
             {"province": "浙江省", "city": "金华市", "district": "义乌市"},
             None]  # a reject is wrong on every field its gold has
    scores = naacl_scores(preds, golds)
    assert scores["province"] == {"accuracy": 1.0, "support": 1}
    assert scores["city"] == {"accuracy": 0.5, "support": 2}
    assert scores["district"] == {"accuracy": 0.5, "support": 2}


def test_the_test_split_loads_every_address() -> None:
    rows = load_naacl(shared_file("address/naacl2019/test.txt"))
    assert len(rows) == 2985  # the split's published size
    assert rows[1] == ("浙江省嘉兴市秀洲区嘉州美都194栋2064商铺",
                       {"province": "浙江省", "city": "嘉兴市", "district": "秀洲区"})
