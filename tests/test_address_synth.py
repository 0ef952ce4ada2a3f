"""The demo model's training data generator: breadth over the division table, formats, and no test data."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from enrich import address_synth
from enrich.address_synth import COMPOUND_SURNAMES, MINORITY_NAMES, examples
from enrich.tasks.divisions import MUNICIPALITIES, division_table, normalize_divisions
from tests.conftest import shared_file

N = 20_000


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, dict[str, str]]]:
    shared_file("address/naacl2019/train.txt")  # the location fragments' source: skip (or fail in CI) if absent
    return list(examples(N, seed=3))


def test_every_province_and_prefecture_is_drawn_and_every_gold_is_a_real_division(rows: list) -> None:
    table = division_table()
    # Every province with counties in the table (Taiwan, Hong Kong and Macau have none there).
    provinces = {table.province_of(d).name for d in table.by_code.values() if d.level == 3}
    prefectures = {d.name for d in table.by_code.values() if d.level == 2 and d.parent not in MUNICIPALITIES}
    assert {g["province"] for _, g in rows} == provinces
    cities = {g["city"] for _, g in rows}
    assert len(prefectures - cities) <= 5, sorted(prefectures - cities)  # a few written short (杭州) instead
    counties = Counter(g["district"] for _, g in rows)
    assert len(counties) > 2_000  # most of the ~2,850 counties in 20,000 rows
    for _, g in rows[:2_000]:
        norm = normalize_divisions(g["province"], g["city"], g["district"], table)  # raises if not real
        assert norm.province_norm == g["province"]


def test_the_gold_spans_are_in_the_text_and_provinces_are_left_to_infer(rows: list) -> None:
    for text, g in rows:
        for field in ("specific_location", "name", "phone"):
            assert g[field] in text, (field, g[field], text)
    inferred = sum(g["province"] not in text and g["province"].removesuffix("省") not in text for text, g in rows)
    assert 0.1 * N < inferred < 0.5 * N  # 丽江市古城区… -> 云南省


def test_names_and_phones_come_in_the_seed_s_formats(rows: list) -> None:
    names = [g["name"] for _, g in rows]
    assert any(n[:2] in COMPOUND_SURNAMES for n in names) and set(MINORITY_NAMES) & set(names)
    phones = [g["phone"] for _, g in rows if g["phone"]]
    kinds = Counter("mobile" if re.fullmatch(r"1[3-9]\d{9}", p) else "landline" if re.fullmatch(r"0\d{2,3}-?\d{7,8}", p)
                    else "11 digits" if re.fullmatch(r"\d{11}", p) else "other" for p in phones)
    assert kinds["other"] == 0 and min(kinds.values()) > 0.15 * len(phones), kinds
    texts = " ".join(t for t, _ in rows[:5_000])
    for label in ("tel", "手机号", "MOBILE", "电话", "收件人"):
        assert label in texts


def test_the_generator_names_no_test_split() -> None:
    """A source check only: the paths it reads are built in this module and gold.shared_data()."""
    source = Path(address_synth.__file__).read_text(encoding="utf-8")
    assert "test_with_system" not in source and "test.txt" not in source and "dev.txt" not in source
    assert "train.txt" in source  # NAACL fragments come from the train split only
