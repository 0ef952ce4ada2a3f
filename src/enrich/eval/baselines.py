"""Rule-based baselines, so that a report shows what the model adds over simple rules.

- address: regexes for the phone, cue words for the name, longest match against the division
  table (enrich.tasks.divisions) for province/city/district, the rest for specific_location;
- keywords: jieba TF-IDF and TextRank (`jieba.analyse`), the same k as the model;
- classify: the majority class.

Nothing heavy runs at import time: the division index and jieba load on first use.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from enrich.tasks.divisions import Division, DivisionTable, division_table

# ---------------------------------------------------------------- address
# Mobile, landline (area code - number), then the gold set's synthetic 11-digit numbers.
PHONE_RE = re.compile(r"(?<![\d-])(?:1[3-9]\d{9}|0\d{2,3}-\d{7,8}|\d{11})(?![\d-])")
_SEP = r"\s*(?:[:：]\s*)?(?:是|为)?\s*(?:[:：]\s*)?"
PHONE_CUE_RE = re.compile(
    r"(?:联系电话|电话号码|手机号码|联系方式|手机号|手机|电话|号码|tel|mobile|phone|call|contact)" + _SEP,
    re.IGNORECASE,
)
NAME_CUE_RE = re.compile(
    r"(?:收件人|收货人|接收人|接收者|收件者|联系人|收件|姓名|寄给|(?:^|(?<=[\s,，;；|、/／:：]))给|name)" + _SEP,
    re.IGNORECASE,
)
_NAME_CHARS = re.compile(r"[\u4e00-\u9fff·•]+")
_LEFTOVER_NAME = re.compile(r"[\u4e00-\u9fff][\u4e00-\u9fff·•]{1,10}")
# A name glued to the end of the location: "...3号楼18层索南扎西".
_UNIT_CHARS = "号楼层室栋座幢门房户"
_TRAILING_NAME = re.compile(rf"(?<=[\dA-Za-z\s{_UNIT_CHARS}])(?![{_UNIT_CHARS}])[\u4e00-\u9fff]{{2,4}}$")
_HARD_SEP = re.compile(r"[|;；,，、\t/／:：]|\s{2,}")
_ZONE_RE = re.compile(r"[\u4e00-\u9fff]{0,6}?(?:开发区|园区|新区|管理区|保税区|试验区|示范区)")
_STRIP = " \t\r\n,，;；|、/／:：.。"


@lru_cache(maxsize=1)
def _index() -> tuple[DivisionTable, dict[str, list[Division]], int]:
    """Name -> divisions: full names at every level, short forms (浙江, 大理, 大理州) for provinces
    and cities only (counties' short forms, 西湖 or 古城, are too often street names)."""
    table = division_table()
    names: dict[str, list[Division]] = {}
    for d in table.by_code.values():
        forms = {d.name}
        if d.level < 3 and len(d.short) >= 2:
            forms |= {d.short} | ({d.short + "州"} if d.name.endswith("自治州") else set())
        for form in forms:
            names.setdefault(form, []).append(d)
    return table, names, max(map(len, names))


def _matches_at(text: str, i: int) -> list[tuple[str, list[Division]]]:
    """Every division name starting at text[i], longest first."""
    _, names, longest = _index()
    out: list[tuple[str, list[Division]]] = []
    for n in range(min(longest, len(text) - i), 1, -1):
        if (hits := names.get(text[i : i + n])) is not None:
            out.append((text[i : i + n], hits))
    return out


def _follows(table: DivisionTable, prev: Division, d: Division) -> bool:
    """May `d` be written right after `prev` (province -> city -> district, 大理市大理市/洱源县)?"""
    if prev.level == 1:
        return d.parent == prev.adcode or (d.level == 3 and table.province_of(d) == prev)
    if prev.level == 2:
        return d.parent == prev.adcode
    return d == prev or (d.level == 3 and d.parent == prev.parent and prev.parent is not None)


def _chain(text: str, i: int) -> list[tuple[str, Division, int]]:
    """The longest run of consistent division names from text[i]: [(surface, division, start)]."""
    table = _index()[0]
    best: list[tuple[str, Division, int]] = []

    def extend(chain: list[tuple[str, Division, int]], pos: int) -> None:
        nonlocal best
        if len(chain) > len(best):
            best = list(chain)
        if len(chain) == 3:
            return
        for surface, hits in _matches_at(text, pos):
            for d in hits:
                if not chain or _follows(table, chain[-1][1], d):
                    extend(chain + [(surface, d, pos)], pos + len(surface))

    extend([], i)
    return best


def _divisions(text: str) -> tuple[dict[str, str], tuple[int, int] | None]:
    """province, city, district and the span they cover (None when no division is found)."""
    table = _index()[0]
    first: list[tuple[str, Division, int]] = []
    for i in range(len(text)):
        chain = _chain(text, i)
        if len(chain) >= 2:  # a city followed by its district beats a lone name earlier on
            first = chain
            break
        first = first or chain
    if not first:
        return {"province": "", "city": "", "district": ""}, None
    start, end = first[0][2], first[-1][2] + len(first[-1][0])
    province = table.province_of(first[0][1])
    municipal = table.municipal_city(province)
    if municipal is not None and first[0][1].level == 1:  # 天津市 names province and city at once
        first = [(first[0][0], municipal, start)] + first[1:]
    elif first[0][1].level == 1 and len(first) > 1:
        first = first[1:]
    city, district = first[0][0], first[1][0] if len(first) > 1 else ""
    lone = first[0][1]
    if len(first) == 1 and lone.level == 3:  # a district without its city: the city is implied
        parent = table.parent(lone)
        city, district = (parent.name, city) if parent is not None and parent.level == 2 else (city, "")
    elif not district and (zone := _ZONE_RE.match(text, end)) is not None:
        district, end = zone.group(), zone.end()
    return {"province": province.name, "city": city, "district": district}, (start, end)


def rule_based_address(text: str) -> dict[str, str]:
    """The six address fields by rules; "" where a rule finds nothing."""
    phone_m = PHONE_RE.search(text)
    blocked: list[tuple[int, int]] = []  # spans that are neither name nor location
    if phone_m is not None:
        blocked.append(phone_m.span())
    blocked += [m.span() for m in PHONE_CUE_RE.finditer(text)]
    out, span = _divisions(text)
    if span is not None:
        blocked.append(span)

    name, name_span = "", None
    for cue in NAME_CUE_RE.finditer(text):
        if span is not None and span[0] <= cue.start() < span[1]:
            continue
        run = _NAME_CHARS.match(text, cue.end())
        if run is None:
            continue
        stop = min([s for s, _ in blocked if run.start() < s < run.end()], default=run.end())
        name, name_span = text[run.start() : stop], (cue.start(), stop)
        break
    if name_span is not None:
        blocked.append(name_span)

    location = ""
    if span is not None:
        stops = [s for s, _ in blocked if s >= span[1]] + [m.start() for m in _HARD_SEP.finditer(text, span[1])]
        loc_end = min(stops, default=len(text))
        location = text[span[1] : loc_end].strip(_STRIP)
        blocked.append((span[1], loc_end))

    if not name:
        rest = list(text)
        for s, e in blocked:
            rest[s:e] = [" "] * (e - s)
        leftovers = _LEFTOVER_NAME.findall("".join(rest))
        if leftovers:
            name = leftovers[0]
        elif (m := _TRAILING_NAME.search(location)) is not None:
            name, location = m.group(), location[: m.start()].rstrip(_STRIP)

    out.update(specific_location=location, name=name, phone=phone_m.group() if phone_m else "")
    return {k: out[k] for k in ("province", "city", "district", "specific_location", "name", "phone")}


# ---------------------------------------------------------------- keywords
@lru_cache(maxsize=1)
def _jieba_analyse() -> Any:
    import jieba  # noqa: PLC0415 - loaded on first use: ~1 s to build the dictionary

    jieba.setLogLevel(logging.WARNING)
    logging.getLogger("jieba").setLevel(logging.WARNING)
    import jieba.analyse  # noqa: PLC0415

    return jieba.analyse


def tfidf_keywords(text: str, k: int) -> list[str]:
    """jieba's TF-IDF keywords (its bundled IDF table), at most k."""
    return list(_jieba_analyse().extract_tags(text, topK=k))


def textrank_keywords(text: str, k: int) -> list[str]:
    """jieba's TextRank keywords (nouns and verbs by default), at most k."""
    return list(_jieba_analyse().textrank(text, topK=k))


# ---------------------------------------------------------------- classify
def majority_class(golds: Sequence[str], labels: Sequence[str] | None = None) -> str:
    """The most frequent gold label; a tie goes to the label listed first in `labels`
    (or, without labels, to the alphabetically first)."""
    if not golds:
        raise ValueError("no gold labels")
    counts = Counter(golds)
    order = list(labels) if labels is not None else sorted(counts)
    top = max(counts.values())
    return next(label for label in order if counts.get(label) == top)
