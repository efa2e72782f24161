"""Synthetic people and places: hospitals, staff, patients, GB 11643-1999 ID numbers.

Every value is derived from a seed and an index through its own ``random.Random`` stream, so a
patient or a doctor is the same whichever report asks for it first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from hurren import spec

__all__ = [
    "Department",
    "Doctor",
    "Hospital",
    "Patient",
    "Staff",
    "id_check_digit",
    "is_valid_id_no",
    "make_hospitals",
    "make_id_no",
    "make_patient",
    "make_staff",
]

# GB 11643-1999: weights of the first 17 digits, and the check character for (sum mod 11)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

# administrative division codes (GB/T 2260) of places in Xinjiang, and a few elsewhere
_REGIONS = (
    "650102",
    "650103",
    "650104",
    "650105",
    "650106",
    "650109",
    "650202",
    "650203",
    "650402",
    "650502",
    "652301",
    "652302",
    "652323",
    "652701",
    "652801",
    "652901",
    "653101",
    "653201",
    "654002",
    "654201",
    "654301",
    "659001",
    "410102",
    "510104",
    "620102",
)

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
)
_GIVEN_M = "伟刚勇毅俊峰强军平保东文辉力明永健世广志义兴良海山仁波宁贵福生龙元全国胜学祥才发武新利清飞彬富顺信子杰涛昌成康星光天达安岩中茂进林有坚和彪博诚先敬震振壮会思群豪心邦承乐绍功松善厚庆磊民友裕河哲江超浩亮政谦亨奇固之轮翰朗伯宏言若鸣朋斌梁栋维启克伦翔旭鹏泽晨辰士以建家致树炎德行时泰盛"
_GIVEN_F = "秀娟英华慧巧美娜静淑惠珠翠雅芝玉萍红娥玲芬芳燕彩春菊兰凤洁梅琳素云莲真环雪荣爱妹霞香月莺媛艳瑞凡佳嘉琼勤珍贞莉桂娣叶璧璐娅琦晶妍茜秋珊莎锦黛青倩婷姣婉娴瑾颖露瑶怡婵雁蓓纨仪荷丹蓉眉君琴蕊薇菁梦岚苑婕馨瑗琰韵融园艺咏卿聪澜纯毓悦昭冰爽琬茗羽希宁欣飘育滢馥筠柔竹霭凝晓欢霄枫芸菲寒伊亚宜可姬舒影荔枝丽"
# Uyghur names are written in Chinese transliteration with a middle dot between given and father's name
_UY_M = (
    "买买提",
    "艾力",
    "阿不都",
    "吐尔逊",
    "艾尔肯",
    "热合曼",
    "努尔",
    "伊力哈木",
    "阿迪力",
    "库尔班",
    "麦麦提",
    "亚森",
)
_UY_F = (
    "古丽",
    "阿依古丽",
    "帕提古丽",
    "热依拉",
    "迪丽娜尔",
    "米热古丽",
    "努尔古丽",
    "阿依努尔",
    "祖丽菲亚",
    "玛依拉",
)
# characters outside the Basic Multilingual Plane: 4 bytes in UTF-8 (real names carry such CJK
# Extension B characters; an emoji now and then is how a careless front desk makes the same case)
_FOUR_BYTE = ("𠮷", "𡘙", "𪚥", "𠀾", "😀")

_CITIES = (
    "乌鲁木齐市",
    "昌吉市",
    "克拉玛依市",
    "石河子市",
    "哈密市",
    "吐鲁番市",
    "库尔勒市",
    "阿克苏市",
    "喀什市",
    "和田市",
    "伊宁市",
    "塔城市",
    "阿勒泰市",
    "博乐市",
    "奎屯市",
    "五家渠市",
)
_HOSPITAL_KINDS = ("人民医院", "中医医院", "第一人民医院", "第二人民医院", "妇幼保健院", "中心医院")


@dataclass(frozen=True, slots=True)
class Hospital:
    org_code: str  # 9 digits
    name: str
    city: str


@dataclass(frozen=True, slots=True)
class Department:
    code: str  # the hospital's local code
    name: str  # the hospital's local name
    std_code: str  # STD_DEPT

    @property
    def std_name(self) -> str:
        return spec.dictionary("STD_DEPT").codes[self.std_code]


@dataclass(frozen=True, slots=True)
class Doctor:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Patient:
    index: int
    patient_id: str
    name: str
    sex_code: str  # STD_SEX, consistent with the ID number's 17th digit
    birth_date: date
    id_type_code: str  # STD_ID_TYPE: 01 mostly, 03 (passport) now and then
    id_no: str
    card_no: str | None

    @property
    def sex_name(self) -> str:
        return spec.dictionary("STD_SEX").codes[self.sex_code]

    def age_on(self, day: date) -> int:
        return (
            day.year
            - self.birth_date.year
            - ((day.month, day.day) < (self.birth_date.month, self.birth_date.day))
        )


# ordering departments (local code, local name, STD_DEPT), the lab, and the imaging departments
ORDERING_DEPTS = tuple(
    Department(*row)
    for row in (
        ("1101", "呼吸内科门诊", "A03.01"),
        ("1102", "消化内科门诊", "A03.02"),
        ("1103", "神经内科门诊", "A03.03"),
        ("1104", "心血管内科门诊", "A03.04"),
        ("1106", "肾内科门诊", "A03.06"),
        ("1107", "内分泌科门诊", "A03.07"),
        ("1201", "普外科门诊", "A04.01"),
        ("1203", "骨科门诊", "A04.03"),
        ("1204", "泌尿外科门诊", "A04.04"),
        ("1301", "妇科门诊", "A05.01"),
        ("1302", "产科门诊", "A05.02"),
        ("1401", "儿科门诊", "A07"),
        ("1411", "耳鼻喉门诊", "A11"),
        ("1421", "眼科门诊", "A10"),
        ("1431", "口腔科门诊", "A12"),
        ("1441", "皮肤科门诊", "A13"),
        ("1501", "急诊科", "A20"),
        ("1511", "保健科门诊", "A01"),
        ("1601", "中医科门诊", "A50"),
        ("1701", "维吾尔医科", "A51.01"),
        ("2101", "呼吸内科病区", "A03.01"),
        ("2104", "心内科病区", "A03.04"),
        ("2201", "普外科病区", "A04.01"),
        ("2801", "重症医学科", "A28"),
    )
)
LAB_DEPT = Department("4300", "检验科", "A30")
IMAGING_DEPTS = {
    "DR": Department("3221", "普通放射", "A32.01"),
    "MG": Department("3221", "普通放射", "A32.01"),
    "CT": Department("3222", "CT室", "A32.02"),
    "MR": Department("3223", "磁共振室", "A32.03"),
    "US": Department("3224", "超声科", "A32.05"),
}


def id_check_digit(first17: str) -> str:
    """The GB 11643-1999 check character (mod 11-2) of the first 17 digits of an ID number."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"expected 17 digits, got {len(first17)} characters")
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def is_valid_id_no(id_no: str) -> bool:
    """True when ``id_no`` is 18 characters with a valid birth date and check character."""
    if len(id_no) != 18 or not id_no[:17].isdigit():
        return False
    try:
        date(int(id_no[6:10]), int(id_no[10:12]), int(id_no[12:14]))
    except ValueError:
        return False
    return id_no[17] == id_check_digit(id_no[:17])


def make_id_no(region: str, birth: date, sequence: int) -> str:
    """An 18-character ID number; ``sequence`` (0-999) is odd for men, even for women."""
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_check_digit(first17)


def _han_name(rng: random.Random, male: bool) -> str:
    pool = _GIVEN_M if male else _GIVEN_F
    given = rng.choice(pool) + (rng.choice(pool) if rng.random() < 0.7 else "")
    return rng.choice(_SURNAMES) + given


def _uyghur_name(rng: random.Random, male: bool) -> str:
    return f"{rng.choice(_UY_M if male else _UY_F)}·{rng.choice(_UY_M)}"


def person_name(rng: random.Random, male: bool) -> str:
    return _uyghur_name(rng, male) if rng.random() < 0.2 else _han_name(rng, male)


def make_patient(seed: int, org_code: str, index: int, *, today: date) -> Patient:
    """Patient ``index`` of a hospital. About 2 % (index % 50 == 7) have a 4-byte UTF-8 character in the name."""
    rng = random.Random(f"{seed}|{org_code}|patient|{index}")
    male = rng.random() < 0.5
    age_days = int(rng.triangular(0, 95, 45) * 365.25)
    birth = today - timedelta(days=age_days + 1)
    seq = rng.randrange(0, 500) * 2 + (1 if male else 0)
    name = person_name(rng, male)
    if index % 50 == 7:
        name = name[:-1] + rng.choice(_FOUR_BYTE) if len(name) > 2 else name + rng.choice(_FOUR_BYTE)
    if rng.random() < 0.02:
        id_type, id_no = "03", f"E{rng.randrange(10**7, 10**8)}"
    else:
        id_type, id_no = "01", make_id_no(rng.choice(_REGIONS), birth, seq)
    card_no = f"K{rng.randrange(10**7, 10**8)}" if rng.random() < 0.9 else None
    return Patient(
        index=index,
        patient_id=str(1_000_000 + index),
        name=name,
        sex_code="1" if male else "2",
        birth_date=birth,
        id_type_code=id_type,
        id_no=id_no,
        card_no=card_no,
    )


def make_hospitals(n: int, seed: int = 0) -> list[Hospital]:
    """``n`` hospitals with distinct 9-digit ``org_code`` and names such as 昌吉市人民医院."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(f"hospitals|{seed}")
    names = [(city, city + kind) for kind in _HOSPITAL_KINDS for city in _CITIES]
    rng.shuffle(names)
    while len(names) < n:
        k = len(names)
        city = _CITIES[k % len(_CITIES)]
        names.append((city, f"{city}第{k}医院"))
    codes: list[str] = []
    while len(codes) < n:
        code = str(rng.randrange(100_000_000, 1_000_000_000))
        if code not in codes:
            codes.append(code)
    return [Hospital(org_code=c, name=nm, city=city) for c, (city, nm) in zip(codes, names, strict=False)]


@dataclass(frozen=True, slots=True)
class Staff:
    """The doctors of one hospital, by department code."""

    by_dept: dict[str, tuple[Doctor, ...]]

    def pick(self, rng: random.Random, dept: Department) -> Doctor:
        return rng.choice(self.by_dept[dept.code])


def make_staff(seed: int, org_code: str) -> Staff:
    rng = random.Random(f"{seed}|{org_code}|staff")
    ids = rng.sample(range(1000, 10000), 400)
    depts = {d.code: d for d in (*ORDERING_DEPTS, LAB_DEPT, *IMAGING_DEPTS.values())}
    by_dept: dict[str, tuple[Doctor, ...]] = {}
    for code in sorted(depts):
        by_dept[code] = tuple(Doctor(str(ids.pop()), person_name(rng, rng.random() < 0.5)) for _ in range(5))
    return Staff(by_dept)
