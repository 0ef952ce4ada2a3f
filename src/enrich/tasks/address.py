"""Chinese shipping-address extraction: raw address string -> six typed fields, plus their
normalized forms checked against the official division table (enrich.tasks.divisions)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from enrich.tasks.base import DomainError, Task
from enrich.tasks.divisions import DivisionError, normalize_divisions, normalize_phone

# The seed tutorial's system prompt, verbatim: the fine-tuned model was trained on it.
SYSTEM_PROMPT = (
    "你是一个专业的信息抽取助手，专门负责从中文文本中提取收件人的JSON信息，"
    "包含的Key有province（省份）、city（城市名称）、district（区县名称）、"
    "specific_location（街道、门牌号、小区、楼栋等详细信息）、name（收件人姓名）、phone（联系电话）"
)


class AddressRecord(BaseModel):
    """One parsed shipping address. Bounds keep guided decoding finite (gold max: 8/10/10/30/11/13)."""

    model_config = ConfigDict(extra="forbid")

    province: str = Field(..., min_length=1, max_length=16, description="省份, e.g. 浙江省 or 天津市")
    city: str = Field(..., max_length=16, description="城市名称; municipalities repeat the province")
    district: str = Field(..., max_length=16, description="区县名称")
    specific_location: str = Field(..., max_length=64, description="街道、门牌号、小区、楼栋")
    name: str = Field(..., max_length=32, description="收件人姓名")
    # The pattern is enforced while decoding, not only after: digits and dashes only.
    phone: str = Field(..., pattern=r"^[0-9+-]{0,20}$", description="联系电话")


class NormalizedAddress(AddressRecord):
    """The extracted fields, untouched, plus normalized ones (null where absent or unresolved)."""

    province_norm: str | None = Field(None, description="official province name, e.g. 内蒙古自治区")
    city_norm: str | None = Field(None, description="official prefecture-level name; municipalities repeat")
    district_norm: str | None = Field(None, description="official county-level name")
    adcode: str | None = Field(None, description="6-digit adcode of the most specific resolved level")
    phone_norm: str | None = Field(None, description="digits, national format; 00 + country code abroad")


class FlaggedAddress(NormalizedAddress):
    """Flag mode: a row failing the checks is kept, with the reason."""

    address_issue: str | None = Field(None, description="why the checks failed; null when they passed")


def check_address(record: AddressRecord, row: Mapping[str, Any], strict: bool = True) -> NormalizedAddress:
    """Normalize divisions and phone. strict: raise DomainError on the first failure; otherwise
    return a FlaggedAddress with `address_issue` set and the unresolved normalized fields null."""
    fields: dict[str, Any] = record.model_dump()
    issues: list[str] = []
    try:
        fields.update(asdict(normalize_divisions(record.province, record.city, record.district)))
    except DivisionError as exc:
        if strict:
            raise
        issues.append(str(exc))
        fields.update(asdict(exc.resolved) if exc.resolved else {})
    try:
        fields["phone_norm"] = normalize_phone(record.phone) or None
    except DomainError as exc:
        if strict:
            raise
        issues.append(str(exc))
    # The extracted fields were validated as an AddressRecord already: build without re-validating.
    if strict:
        return NormalizedAddress.model_construct(**fields)
    return FlaggedAddress.model_construct(**fields, address_issue="; ".join(issues) or None)


def render_user(row: Mapping[str, Any]) -> str:
    return str(row["text"])


def make_address_task(strict: bool = True) -> Task:
    """The address task; strict=False flags rows failing the checks instead of rejecting them."""
    return Task(
        name="address",
        version="2" if strict else "2-flag",  # flag mode writes another column: another fingerprint
        description="Shipping address -> province, city, district, specific_location, name, phone"
        " (+ normalized division names, adcode, phone).",
        output_model=AddressRecord,
        system_prompt=SYSTEM_PROMPT,
        render_user=render_user,
        check=partial(check_address, strict=strict),
        columns_model=NormalizedAddress if strict else FlaggedAddress,
    )


ADDRESS_TASK = make_address_task(True)
