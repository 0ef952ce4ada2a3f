"""Generate the bundled sample shards used by `make demo` (deterministic, synthetic).

Run from the repo root:

    .venv/bin/python samples/make_addresses.py

Writes (byte-identical on every run, given the same pyarrow version for the Parquet file):

    samples/addresses/part-000.jsonl    120 rows  SO-000001 .. SO-000120
    samples/addresses/part-001.jsonl    120 lines SO-000121 .. SO-000240 (117 valid + 3 planted)
    samples/addresses/part-002.parquet  120 rows  SO-000241 .. SO-000360 (zstd)
    samples/addresses_gold.jsonl        357 rows, the ideal extraction for every valid row

Every row has `order_id` (unique across shards), `text` (a raw Chinese shipping-address
string) and `channel` ("web" / "app" / "store").

Planted bad rows (all in part-001.jsonl, none has a gold entry):

    line 30  SO-000150  "text": ""      -> empty text
    line 70  SO-000190  "text": null    -> missing text
    line 110 SO-000230  {"order_id": "SO-000230", "text": "广东省深圳市   (truncated, not valid JSON)

All data is written here by hand (division table, road / building names, surnames, given
names, phone prefixes) and combined with random.Random(SEED); no third-party dataset is used.
The division triples are real province / prefecture-level city / district (or county-level
city) combinations; municipalities use the municipality as both province and city.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240611
ROWS_PER_SHARD = 120
HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "addresses"
GOLD_PATH = HERE / "addresses_gold.jsonl"

# Planted bad rows in part-001.jsonl: global row number (1-based) -> kind.
PLANTED = {150: "empty", 190: "null", 230: "truncated"}

# (province, city, district, roads that really run through that district)
DIVISIONS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("浙江省", "杭州市", "西湖区", ("文三路", "天目山路", "教工路")),
    ("浙江省", "杭州市", "余杭区", ("文一西路", "五常大道")),
    ("浙江省", "宁波市", "鄞州区", ("天童南路", "中山东路")),
    ("浙江省", "温州市", "鹿城区", ("人民路", "车站大道")),
    ("浙江省", "金华市", "义乌市", ("稠州北路", "工人北路")),
    ("浙江省", "宁波市", "慈溪市", ("新城大道北路", "三北大街")),
    ("江苏省", "南京市", "鼓楼区", ("中山北路", "广州路")),
    ("江苏省", "苏州市", "姑苏区", ("人民路", "干将西路")),
    ("江苏省", "苏州市", "昆山市", ("前进西路", "柏庐中路")),
    ("江苏省", "苏州市", "张家港市", ("暨阳中路", "人民中路")),
    ("江苏省", "无锡市", "梁溪区", ("中山路", "人民中路")),
    ("江苏省", "无锡市", "江阴市", ("澄江中路", "人民东路")),
    ("广东省", "广州市", "天河区", ("天河路", "体育西路", "黄埔大道西")),
    ("广东省", "广州市", "越秀区", ("北京路", "东风中路")),
    ("广东省", "深圳市", "南山区", ("深南大道", "科技南十二路", "南海大道")),
    ("广东省", "深圳市", "福田区", ("益田路", "福华三路", "深南中路")),
    ("广东省", "佛山市", "顺德区", ("德胜东路", "南国东路")),
    ("四川省", "成都市", "武侯区", ("科华北路", "人民南路四段")),
    ("四川省", "成都市", "锦江区", ("春熙路", "东大街")),
    ("四川省", "成都市", "都江堰市", ("幸福路", "建设路")),
    ("四川省", "绵阳市", "涪城区", ("临园路", "剑南路")),
    ("湖北省", "武汉市", "洪山区", ("珞喻路", "雄楚大道")),
    ("湖北省", "武汉市", "江汉区", ("江汉路", "建设大道")),
    ("湖南省", "长沙市", "岳麓区", ("麓山南路", "枫林一路")),
    ("湖南省", "长沙市", "芙蓉区", ("五一大道", "车站北路")),
    ("湖南省", "长沙市", "浏阳市", ("金沙北路", "白沙西路")),
    ("山东省", "济南市", "历下区", ("泉城路", "经十路")),
    ("山东省", "青岛市", "市南区", ("香港中路", "山东路")),
    ("山东省", "潍坊市", "寿光市", ("农圣街", "圣城街")),
    ("河南省", "郑州市", "金水区", ("花园路", "农业路")),
    ("河北省", "石家庄市", "长安区", ("中山东路", "建设北大街")),
    ("山西省", "太原市", "小店区", ("长风街", "体育路")),
    ("福建省", "厦门市", "思明区", ("湖滨南路", "中山路")),
    ("福建省", "福州市", "鼓楼区", ("五四路", "杨桥中路")),
    ("福建省", "泉州市", "晋江市", ("世纪大道", "泉安中路")),
    ("陕西省", "西安市", "雁塔区", ("科技路", "长安南路")),
    ("辽宁省", "沈阳市", "和平区", ("太原北街", "南京南街")),
    ("辽宁省", "大连市", "中山区", ("人民路", "友好路")),
    ("黑龙江省", "哈尔滨市", "南岗区", ("西大直街", "红军街")),
    ("吉林省", "长春市", "朝阳区", ("人民大街", "西安大路")),
    ("安徽省", "合肥市", "蜀山区", ("长江西路", "黄山路")),
    ("江西省", "南昌市", "东湖区", ("八一大道", "阳明路")),
    ("云南省", "昆明市", "五华区", ("东风西路", "人民中路")),
    ("贵州省", "贵阳市", "云岩区", ("中华北路", "宝山北路")),
    ("甘肃省", "兰州市", "城关区", ("东岗西路", "庆阳路")),
    ("海南省", "海口市", "美兰区", ("海府路", "和平大道")),
    ("广西壮族自治区", "南宁市", "青秀区", ("民族大道", "东葛路")),
    ("内蒙古自治区", "呼和浩特市", "新城区", ("新华大街", "兴安北路")),
    ("新疆维吾尔自治区", "乌鲁木齐市", "天山区", ("解放南路", "新华南路")),
    ("北京市", "北京市", "海淀区", ("中关村大街", "学院路", "知春路")),
    ("北京市", "北京市", "朝阳区", ("建国路", "望京街", "朝阳北路")),
    ("上海市", "上海市", "浦东新区", ("世纪大道", "碧波路", "张杨路")),
    ("上海市", "上海市", "徐汇区", ("漕溪北路", "肇嘉浜路")),
    ("天津市", "天津市", "河西区", ("珠江道", "友谊路")),
    ("天津市", "天津市", "南开区", ("鞍山西道", "白堤路")),
    ("重庆市", "重庆市", "渝中区", ("民族路", "中山三路")),
    ("重庆市", "重庆市", "江北区", ("建新北路", "北城天街")),
]

MUNICIPALITIES = {"北京市", "上海市", "天津市", "重庆市"}
PROVINCE_SHORT = {"广西壮族自治区": "广西", "内蒙古自治区": "内蒙古", "新疆维吾尔自治区": "新疆"}

# Telephone area codes for a few cities (used for the occasional landline number).
AREA_CODES = {
    "北京市": "010", "上海市": "021", "天津市": "022", "重庆市": "023",
    "广州市": "020", "深圳市": "0755", "杭州市": "0571", "南京市": "025",
    "成都市": "028", "武汉市": "027", "西安市": "029", "苏州市": "0512",
}

# Generic road names for the rows that do not use a district's own road.
GENERIC_ROADS = (
    "建设路", "解放路", "人民路", "和平路", "新华路", "文化路", "胜利路", "光明路",
    "朝阳路", "青年路", "幸福路", "长江路", "黄河路", "学府路", "工业大道", "迎宾大道",
)
OFFICE_BUILDINGS = (
    "金泰大厦", "华贸中心", "国际金融中心", "时代广场", "创业大厦", "信息大厦", "世纪商务楼",
    "东方大厦", "嘉里中心", "环球贸易中心", "新城国际", "恒通大厦",
)
PARKS = ("东部软件园", "科技创业园", "智慧产业园", "创新港", "数字经济产业园", "文创园")
COMMUNITIES = (
    "阳光花园", "锦绣家园", "翠苑小区", "和平里小区", "金色家园", "碧水湾", "枫林晚小区",
    "紫荆苑", "滨江花园", "新华小区", "怡景苑", "书香门第", "丽景湾", "康乐新村",
)
SHOPS = ("菜鸟驿站", "丰巢快递柜", "物业服务中心", "门卫室", "前台")

SURNAMES = (
    "张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡",
    "郭", "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹",
    "彭", "曾", "肖", "田", "董", "袁", "潘", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏",
)
COMPOUND_SURNAMES = ("欧阳", "慕容", "司马", "诸葛", "上官", "东方", "令狐", "皇甫")
GIVEN_CHARS = (
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
    "明", "超", "秀", "霞", "平", "刚", "桂", "英", "华", "玉", "萍", "红", "鹏", "辉", "建",
    "文", "斌", "宇", "浩", "凯", "晨", "欣", "怡", "思", "佳", "子", "涵", "梓", "轩", "博",
    "雨", "婷", "俊", "嘉", "琪", "修", "远", "泽", "楠", "瑶", "昊", "天", "晓", "雪", "海",
)
MOBILE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151",
    "152", "153", "155", "156", "157", "158", "159", "166", "173", "177", "180", "181",
    "182", "183", "185", "186", "187", "188", "189", "191", "198", "199",
)

NAME_LABELS = ("收件人", "收件者", "收货人", "接收人", "联系人", "姓名", "收件人姓名", "")
PHONE_LABELS = ("电话", "手机", "手机号", "联系电话", "电话号码", "手机号码", "MOBILE", "TEL", "Tel", "")
LANDLINE_LABELS = ("电话", "联系电话", "座机", "固话", "TEL", "Tel", "")
ADDR_LABELS = ("地址", "收货地址", "详细地址", "收件地址", "")
LABEL_SEPS = ("：", ":", ": ", " ", "", "：")
PART_SEPS = (":", " , ", "，", " ", "；", ",", " | ", "  ", "，")
CHANNELS = (("web", 45), ("app", 40), ("store", 15))


def make_name(rng: random.Random) -> str:
    if rng.random() < 0.07:
        return rng.choice(COMPOUND_SURNAMES) + "".join(rng.choice(GIVEN_CHARS) for _ in range(2))
    surname = rng.choice(SURNAMES)
    roll = rng.random()
    if roll < 0.06:
        return surname + rng.choice(("先生", "女士"))
    if roll < 0.40:
        return surname + rng.choice(GIVEN_CHARS)
    return surname + "".join(rng.choice(GIVEN_CHARS) for _ in range(2))


def make_phone(rng: random.Random, city: str) -> str:
    if city in AREA_CODES and rng.random() < 0.12:
        return f"{AREA_CODES[city]}-{rng.choice('2345678')}{rng.randrange(10 ** 7):07d}"
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10 ** 8):08d}"


def make_location(rng: random.Random, roads: tuple[str, ...]) -> str:
    road = rng.choice(roads) if rng.random() < 0.75 else rng.choice(GENERIC_ROADS)
    base = f"{road}{rng.randint(1, 999)}号"
    kind = rng.random()
    if kind < 0.25:
        floor = rng.randint(2, 32)
        tail = rng.choice((f"{floor}层", f"{floor}楼", f"{floor}{rng.randint(1, 20):02d}室"))
        return base + rng.choice(OFFICE_BUILDINGS) + rng.choice(("", "A座", "B座", "")) + tail
    if kind < 0.40:
        return base + rng.choice(PARKS) + f"{rng.randint(1, 12)}号楼" + rng.choice(("", f"{rng.randint(1, 6)}楼"))
    if kind < 0.80:
        community = rng.choice(COMMUNITIES)
        unit = rng.choice((
            f"{rng.randint(1, 30)}栋{rng.randint(1, 4)}单元{rng.randint(1, 28)}{rng.randint(1, 4):02d}室",
            f"{rng.randint(1, 30)}幢{rng.randint(1, 28)}{rng.randint(1, 4):02d}",
            f"{rng.randint(1, 30)}号楼{rng.randint(1, 4)}单元{rng.randint(1, 6)}{rng.randint(1, 4):02d}",
        ))
        if rng.random() < 0.2:
            return community + unit  # no road, just the community
        return base + community + unit
    if kind < 0.90:
        return base + rng.choice(COMMUNITIES) + rng.choice(SHOPS)
    return base + rng.choice(("", "附近", "院内", f"{rng.randint(1, 9)}号门"))


def address_text(rng: random.Random, province: str, city: str, district: str, loc: str) -> str:
    """The region prefix as people type it: full, short, or missing the province."""
    spaced = rng.random() < 0.15
    if province in MUNICIPALITIES:
        head = [city if rng.random() < 0.8 else city.removesuffix("市")]
        if rng.random() < 0.08:
            head = [province, city]  # "北京市北京市海淀区" as some checkout forms produce
    else:
        roll = rng.random()
        if roll < 0.55:
            head = [province, city]
        elif roll < 0.75:
            head = [city]  # no province, city first
        elif roll < 0.90:
            short = PROVINCE_SHORT.get(province, province.removesuffix("省"))
            head = [short, city]
        else:
            head = [province, city.removesuffix("市")]
    parts = [*head, district, loc]
    return (" " if spaced else "").join(parts)


def labelled(rng: random.Random, labels: tuple[str, ...], value: str) -> str:
    label = rng.choice(labels)
    if not label:
        return value
    return label + rng.choice(LABEL_SEPS) + value


def make_row(rng: random.Random, division: tuple[str, str, str, tuple[str, ...]]) -> tuple[str, dict]:
    province, city, district, roads = division
    while True:
        loc = make_location(rng, roads)
        if len(loc) <= 30:
            break
    name = make_name(rng)
    phone = make_phone(rng, city)
    addr = address_text(rng, province, city, district, loc)

    style = rng.random()
    if style < 0.15:
        # Bare comma-separated "name，phone，address" (no labels), or address first.
        sep = rng.choice(("，", ",", " ", "  "))
        fields = [name, phone, addr] if rng.random() < 0.6 else [addr, name, phone]
        text = sep.join(fields)
    else:
        name_part = labelled(rng, NAME_LABELS, name)
        phone_part = labelled(rng, LANDLINE_LABELS if "-" in phone else PHONE_LABELS, phone)
        addr_part = labelled(rng, ADDR_LABELS, addr) if rng.random() < 0.4 else addr
        parts = [name_part, phone_part, addr_part]
        rng.shuffle(parts)
        text = rng.choice(PART_SEPS).join(parts)
    gold = {
        "province": province,
        "city": city,
        "district": district,
        "specific_location": loc,
        "name": name,
        "phone": phone,
    }
    return text, gold


def pick_channel(rng: random.Random) -> str:
    names = [c for c, _ in CHANNELS]
    weights = [w for _, w in CHANNELS]
    return rng.choices(names, weights=weights)[0]


def build() -> tuple[list[list], list[dict]]:
    """Three shards of rows (dicts, or a raw string for the truncated line) and the gold list."""
    rng = random.Random(SEED)
    total = 3 * ROWS_PER_SHARD
    # Cycle through the division table so every triple is used, in a seeded order.
    plan: list = []
    while len(plan) < total:
        batch = list(DIVISIONS)
        rng.shuffle(batch)
        plan.extend(batch)

    shards: list[list] = [[], [], []]
    gold: list[dict] = []
    for n in range(1, total + 1):
        order_id = f"SO-{n:06d}"
        shard = shards[(n - 1) // ROWS_PER_SHARD]
        channel = pick_channel(rng)
        kind = PLANTED.get(n)
        if kind == "empty":
            shard.append({"order_id": order_id, "text": "", "channel": channel})
        elif kind == "null":
            shard.append({"order_id": order_id, "text": None, "channel": channel})
        elif kind == "truncated":
            shard.append(f'{{"order_id": "{order_id}", "text": "广东省深圳市')
        else:
            text, fields = make_row(rng, plan[n - 1])
            shard.append({"order_id": order_id, "text": text, "channel": channel})
            gold.append({"order_id": order_id, **fields})
    return shards, gold


def write_jsonl(path: Path, rows: list) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            line = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)
            fh.write(line + "\n")


def write_parquet(path: Path, rows: list[dict]) -> None:
    schema = pa.schema([("order_id", pa.string()), ("text", pa.string()), ("channel", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="zstd")


def main() -> None:
    shards, gold = build()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_jsonl(OUT_DIR / "part-000.jsonl", shards[0])
    write_jsonl(OUT_DIR / "part-001.jsonl", shards[1])
    write_parquet(OUT_DIR / "part-002.parquet", shards[2])
    write_jsonl(GOLD_PATH, gold)
    print(f"wrote {sum(len(s) for s in shards)} rows ({len(gold)} with gold, {len(PLANTED)} planted bad) "
          f"to {OUT_DIR.relative_to(HERE.parent)}/ and {GOLD_PATH.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
