"""Chinese shipping-address extraction: raw address string -> six typed fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from enrich.tasks.base import DomainError, Task

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


def check_address(record: AddressRecord, row: Mapping[str, Any]) -> AddressRecord:
    """Light structural checks; division-table normalization is a later, separate check."""
    if not record.province.strip():
        raise DomainError("province is blank")
    digits = sum(ch.isdigit() for ch in record.phone)
    if record.phone and not 7 <= digits <= 15:
        raise DomainError(f"phone {record.phone!r} has {digits} digits (7-15 expected)")
    return record


def render_user(row: Mapping[str, Any]) -> str:
    return str(row["text"])


ADDRESS_TASK = Task(
    name="address",
    version="1",
    description="Shipping address -> province, city, district, specific_location, name, phone.",
    output_model=AddressRecord,
    system_prompt=SYSTEM_PROMPT,
    render_user=render_user,
    check=check_address,  # type: ignore[arg-type]
)
