"""Name, address and phone-number material for the demo world (fictional people on reserved ranges).

Everything here is a constant array sampled with vectorized `rng.choice`; nothing is per customer.

Reserved ranges used for contact details (so a demo world can never reach a real person):
- Email: the RFC 2606 reserved domains `example.com`, `example.net`, `example.org`.
- US/Canada phones: `+1 NPA 555 01XX`, the block the North American Numbering Plan reserves
  for fictional use (555-0100..555-0199); `phonenumbers` accepts them as valid for real NPAs.
- UK phones: Ofcom's "drama" ranges (e.g. 0113 496 0xxx, 020 7946 0xxx). The mobile drama range
  07700 900xxx is *not* accepted by `phonenumbers` 9.x, so only the geographic ones are used.
- China (+86): the numbering plan publishes no fictional range. We use 11-digit mobile numbers in
  the 13x/15x/18x blocks that `phonenumbers.is_valid_number` accepts (the validator in
  `winback.sources` requires valid E.164), with the subscriber part derived from the customer
  number. They are syntactically real numbers: the demo only ever sends to the local provider
  emulator, and real provider keys must never be used with a demo world.
"""

from __future__ import annotations

import numpy as np

# (hanzi, pinyin, relative frequency) — the most common surnames of mainland China.
ZH_SURNAMES: tuple[tuple[str, str, float], ...] = (
    ("王", "wang", 7.1), ("李", "li", 7.0), ("张", "zhang", 6.7), ("刘", "liu", 5.4), ("陈", "chen", 4.5),
    ("杨", "yang", 3.1), ("黄", "huang", 2.2), ("赵", "zhao", 2.0), ("吴", "wu", 1.9), ("周", "zhou", 1.9),
    ("徐", "xu", 1.3), ("孙", "sun", 1.3), ("马", "ma", 1.2), ("朱", "zhu", 1.1), ("胡", "hu", 1.1),
    ("郭", "guo", 1.0), ("何", "he", 0.9), ("高", "gao", 0.9), ("林", "lin", 0.9), ("罗", "luo", 0.9),
    ("郑", "zheng", 0.8), ("梁", "liang", 0.8), ("谢", "xie", 0.6), ("宋", "song", 0.6), ("唐", "tang", 0.6),
    ("许", "xu", 0.6), ("韩", "han", 0.5), ("冯", "feng", 0.5), ("邓", "deng", 0.5), ("曹", "cao", 0.5),
    ("彭", "peng", 0.5), ("曾", "zeng", 0.5), ("肖", "xiao", 0.5), ("田", "tian", 0.4), ("董", "dong", 0.4),
    ("袁", "yuan", 0.4), ("潘", "pan", 0.4), ("于", "yu", 0.4), ("蒋", "jiang", 0.4), ("蔡", "cai", 0.4),
    ("余", "yu", 0.4), ("杜", "du", 0.4), ("叶", "ye", 0.4), ("程", "cheng", 0.4), ("苏", "su", 0.3),
    ("魏", "wei", 0.3), ("吕", "lv", 0.3), ("丁", "ding", 0.3), ("任", "ren", 0.3), ("沈", "shen", 0.3),
    ("姚", "yao", 0.3), ("卢", "lu", 0.3), ("姜", "jiang", 0.3), ("崔", "cui", 0.3), ("钟", "zhong", 0.3),
    ("谭", "tan", 0.3), ("陆", "lu", 0.3), ("汪", "wang", 0.3), ("范", "fan", 0.3), ("金", "jin", 0.3),
    ("欧阳", "ouyang", 0.05), ("司马", "sima", 0.01), ("上官", "shangguan", 0.01),
)

# (hanzi, pinyin) — common given names, one or two characters, across generations.
ZH_GIVEN: tuple[tuple[str, str], ...] = (
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("秀英", "xiuying"), ("敏", "min"), ("静", "jing"),
    ("丽", "li"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"),
    ("艳", "yan"), ("杰", "jie"), ("娟", "juan"), ("涛", "tao"), ("明", "ming"), ("超", "chao"),
    ("秀兰", "xiulan"), ("霞", "xia"), ("平", "ping"), ("刚", "gang"), ("桂英", "guiying"), ("子涵", "zihan"),
    ("欣怡", "xinyi"), ("梓轩", "zixuan"), ("浩然", "haoran"), ("雨桐", "yutong"), ("一诺", "yinuo"),
    ("宇轩", "yuxuan"), ("思远", "siyuan"), ("佳怡", "jiayi"), ("晨", "chen"), ("婷", "ting"), ("鑫", "xin"),
    ("博文", "bowen"), ("俊杰", "junjie"), ("晓明", "xiaoming"), ("晓燕", "xiaoyan"), ("建华", "jianhua"),
    ("建国", "jianguo"), ("志强", "zhiqiang"), ("海燕", "haiyan"), ("文博", "wenbo"), ("嘉怡", "jiayi"),
    ("雪", "xue"), ("琳", "lin"), ("颖", "ying"), ("慧", "hui"), ("倩", "qian"), ("鹏", "peng"), ("斌", "bin"),
    ("辉", "hui"), ("宁", "ning"), ("凯", "kai"), ("昊", "hao"), ("欣", "xin"), ("悦", "yue"), ("诗涵", "shihan"),
    ("若曦", "ruoxi"), ("天佑", "tianyou"), ("子豪", "zihao"), ("佳琪", "jiaqi"), ("梦琪", "mengqi"),
    ("文静", "wenjing"), ("丹", "dan"), ("玲", "ling"), ("红", "hong"), ("波", "bo"), ("毅", "yi"),
    ("晓东", "xiaodong"), ("振华", "zhenhua"), ("国强", "guoqiang"), ("淑华", "shuhua"), ("美玲", "meiling"),
    ("雅婷", "yating"), ("家豪", "jiahao"), ("嘉欣", "jiaxin"), ("泽宇", "zeyu"), ("睿", "rui"),
)

EN_FIRST: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
    "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra",
    "Emily", "Olivia", "Emma", "Sophia", "Liam", "Noah", "Ethan", "Ava", "Mia", "Chloe", "Grace", "Lucas",
    "Henry", "Oliver", "Amelia", "Harper", "Evelyn", "Jack", "Ryan", "Kevin", "Zoe", "Nathan", "Hannah",
)
EN_LAST: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
    "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Chen",
    "Wong", "Tan", "Evans", "Patel", "O'Brien", "Murphy", "Kim",
)

EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.net", "example.org")  # RFC 2606

# Time zones per locale with their shares (zh-CN mostly mainland, en-US spread over the world).
ZH_TIMEZONES: tuple[tuple[str, float], ...] = (
    ("Asia/Shanghai", 0.88), ("Asia/Hong_Kong", 0.07), ("Asia/Singapore", 0.05),
)
EN_TIMEZONES: tuple[tuple[str, float], ...] = (
    ("America/New_York", 0.33), ("America/Los_Angeles", 0.28), ("Europe/London", 0.16),
    ("Asia/Singapore", 0.09), ("Asia/Hong_Kong", 0.06), ("Asia/Shanghai", 0.08),
)
TIMEZONES: tuple[str, ...] = (
    "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Singapore", "America/Los_Angeles", "America/New_York",
    "Europe/London",
)

# China mobile blocks (China Mobile / Unicom / Telecom) accepted by phonenumbers as valid mobiles.
CN_MOBILE_PREFIXES: tuple[str, ...] = (
    "134", "135", "136", "137", "138", "139", "150", "151", "152", "157", "158", "159", "182", "183",
    "187", "188", "130", "131", "132", "155", "156", "185", "186", "133", "153", "180", "181", "189",
)
# Real North American area codes; the subscriber part is always 555-01XX (reserved for fiction).
US_AREA_CODES: tuple[str, ...] = (
    "212", "646", "718", "917", "347", "415", "510", "408", "650", "213", "310", "323", "818", "626",
    "206", "312", "773", "617", "202", "305", "404", "512", "713", "214", "602", "702", "303", "503",
    "215", "412", "614", "313", "612", "816", "919", "704", "615", "801", "916", "858",
)
# Ofcom drama ranges (geographic): national significant number prefix; 1,000 numbers each.
UK_DRAMA_PREFIXES: tuple[str, ...] = (
    "1134960", "1144960", "1164960", "1174960", "1184960", "1214960", "1314960", "1414960",
    "1514960", "1614960", "2079460", "1914980",
)

# Retail categories with their popularity (favourite categories are drawn from this).
CATEGORIES: tuple[tuple[str, float], ...] = (
    ("apparel", 0.22), ("beauty", 0.16), ("home", 0.13), ("food", 0.14), ("electronics", 0.09),
    ("baby", 0.08), ("sports", 0.09), ("books", 0.09),
)
# Price level of a category relative to the customer's own mean basket.
CATEGORY_PRICE_FACTOR: tuple[float, ...] = (1.0, 0.9, 1.1, 0.6, 1.8, 0.9, 1.1, 0.5)

COMPLAINT_KINDS: tuple[tuple[str, float], ...] = (
    ("delivery_late", 0.34), ("damaged_item", 0.2), ("wrong_item", 0.14), ("refund_delay", 0.14),
    ("staff_attitude", 0.1), ("billing_error", 0.08),
)

# Hour-of-day weights (local time) of online retail orders: evening peak, a lunch bump, quiet nights.
ORDER_HOUR_WEIGHTS: tuple[float, ...] = (
    1.6, 0.8, 0.4, 0.2, 0.15, 0.2, 0.5, 1.5, 3.0, 4.0, 4.6, 5.0,
    5.6, 5.0, 4.6, 4.6, 4.8, 5.0, 5.4, 6.4, 7.6, 8.4, 7.6, 4.2,
)


def weights(pairs) -> tuple[np.ndarray, np.ndarray]:
    """Split `(value, weight)` pairs into a value array and a probability vector summing to one."""
    values = np.array([p[0] for p in pairs], dtype=object)
    w = np.array([p[-1] for p in pairs], dtype=float)
    return values, w / w.sum()
