"""Locale formatting for templates: money, dates and percentages through babel, cached per locale.

babel's `format_currency` / `format_date` cost 150–200 µs a call (they look up locale data and parse
the CLDR pattern each time), more than rendering a whole SMS. So the locale data is looked up once per
(locale, currency) and kept; the per-call work is a `Decimal` format and a few string replacements.
The results are the same strings babel gives (tests compare them across locales and amounts).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as _babel_format_date
from babel.numbers import NumberPattern, get_currency_precision, get_currency_symbol

from winback.errors import ConfigError

_LOCALE_RE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|\d{3}))?$")


def normalize_locale(value: str) -> str:
    """Normalise a BCP 47 / POSIX locale tag: `zh_cn` → `zh-CN`, `zh-hant-tw` → `zh-Hant-TW`."""
    text = str(value).strip().split(".")[0].split("@")[0]
    m = _LOCALE_RE.match(text)
    if not m:
        raise ConfigError(f"not a locale tag: {value!r} (expected e.g. zh-CN or en-US)")
    lang, script, region = m.groups()
    parts = [lang.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


@lru_cache(maxsize=256)
def babel_locale(locale: str) -> Locale:
    """The babel `Locale` for a BCP 47 tag (cached); a ConfigError names an unknown one."""
    try:
        return Locale.parse(normalize_locale(locale), sep="-")
    except (UnknownLocaleError, ValueError) as exc:
        raise ConfigError(f"unknown locale {locale!r} ({exc})") from None


@dataclass(frozen=True, slots=True)
class _MoneyFormat:
    """What babel's currency pattern for one (locale, currency) needs, looked up once."""

    pattern: NumberPattern
    locale: Locale
    currency: str
    digits: int
    prefix: tuple[str, str]
    suffix: tuple[str, str]
    decimal: str
    group: str
    simple: bool  # uniform grouping of 3 and plain digits: the fast path gives babel's exact string


@lru_cache(maxsize=1024)
def _money_format(currency: str, locale: str) -> _MoneyFormat:
    loc = babel_locale(locale)
    cur = str(currency).upper()
    if not re.fullmatch(r"[A-Z]{3}", cur):
        raise ConfigError(f"not an ISO 4217 currency code: {currency!r}")
    pattern = loc.currency_formats["standard"]
    symbol = get_currency_symbol(cur, loc)
    symbols = loc.number_symbols["latn"]
    digits = get_currency_precision(cur)
    prefix = tuple(p.replace("¤", symbol) for p in pattern.prefix)
    suffix = tuple(s.replace("¤", symbol) for s in pattern.suffix)
    simple = (
        pattern.grouping == (3, 3)
        and pattern.int_prec[0] == 1
        and "¤¤" not in "".join(pattern.prefix + pattern.suffix)
        and pattern.scale == 0
    )
    return _MoneyFormat(pattern, loc, cur, digits, prefix, suffix, symbols["decimal"], symbols["group"], simple)


def _to_decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{what}: expected a number, got {value!r}")
    try:
        # repr() of a float is the shortest string that round-trips, so 2.675 rounds like a person
        # expects (2.68) and exactly like babel, which also goes through the string form.
        return Decimal(repr(value) if isinstance(value, float) else str(value))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{what}: expected a number, got {value!r}") from None


def money(amount: Any, currency: str, locale: str) -> str:
    """Format an amount of money for a locale: `money(1280, "CNY", "zh-CN")` → `¥1,280.00`."""
    fmt = _money_format(currency, locale)
    value = _to_decimal(amount, "money")
    if not value.is_finite():
        raise ConfigError(f"money: cannot format {amount!r}")
    if not fmt.simple:
        return fmt.pattern.apply(value, fmt.locale, currency=fmt.currency, currency_digits=True)
    # Decimal's format rounds half-even, as babel does.
    text = format(value, f",.{fmt.digits}f")
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    if fmt.group != "," or fmt.decimal != ".":
        text = text.replace(",", "\0").replace(".", fmt.decimal).replace("\0", fmt.group)
    i = 1 if negative else 0
    return f"{fmt.prefix[i]}{text}{fmt.suffix[i]}"


def _to_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return value.to_pydatetime().date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise ConfigError(f"date: expected a date or an ISO date string, got {value!r}")


@lru_cache(maxsize=65536)
def _format_date_cached(day: date, locale: str, fmt: str) -> str:
    return _babel_format_date(day, fmt, locale=babel_locale(locale))


def format_date(value: Any, locale: str, format: str = "long") -> str:
    """Format a date for a locale: `format_date("2026-11-23", "zh-CN")` → `2026年11月23日`.

    `format` is a babel/CLDR width (`short`, `medium`, `long`, `full`) or a CLDR pattern. A datetime is
    shown as its calendar date as given (convert it to the customer's zone before, if it matters).
    """
    return _format_date_cached(_to_date(value), locale, format)


@lru_cache(maxsize=4096)
def _percent_cached(value: Decimal, locale: str, digits: int) -> str:
    loc = babel_locale(locale)
    pattern = copy.copy(loc.percent_formats[None])
    pattern.frac_prec = (0, digits)  # CLDR's pattern has no decimals; 12.5 % should not read 13 %
    return pattern.apply(value, loc)


def percent(value: Any, locale: str, digits: int = 1) -> str:
    """Format a fraction as a percentage for a locale: `percent(0.15, "en-US")` → `15%` (up to `digits` decimals)."""
    return _percent_cached(_to_decimal(value, "percent"), locale, int(digits))


def zhe(percent_off: Any) -> str:
    """The Chinese 折 form of a percentage off: 15 → `8.5折`, 20 → `8折`, 12 → `8.8折`."""
    off = _to_decimal(percent_off, "zhe")
    if not (0 < off < 100):
        raise ConfigError(f"zhe: a percentage off must be between 0 and 100, got {percent_off!r}")
    tenths = (Decimal(100) - off) / Decimal(10)
    text = format(tenths.normalize(), "f")
    return f"{text}折"


def _is_cjk(text: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text)


def display_name(customer: Any, locale: str) -> str:
    """How to address a customer in a greeting, or "" when no name is known.

    Chinese (`zh-*`): the full name, family name first (王 + 芳 → `王芳`); a Latin-script name in a
    Chinese message keeps Western order with a space. Other locales: the first name.
    """
    first = str(customer.get("first_name") or "").strip()
    last = str(customer.get("last_name") or "").strip()
    if locale.lower().startswith("zh"):
        if _is_cjk(first + last):
            return f"{last}{first}"
        return " ".join(p for p in (first, last) if p)
    return first or ""


# Display names of product categories per script. The keys are the demo world's categories
# (`winback.demo.names.CATEGORIES`) — the values a shop's order export usually carries as codes;
# a category already written for customers (e.g. "茶具") or unknown here is printed as it is.
_CATEGORY_NAMES: dict[str, dict[str, str]] = {
    "zh-Hans": {"apparel": "服饰", "beauty": "美妆", "home": "家居", "food": "食品", "electronics": "数码",
                "baby": "母婴", "sports": "运动", "books": "图书"},
    "zh-Hant": {"apparel": "服飾", "beauty": "美妝", "home": "家居", "food": "食品", "electronics": "3C數位",
                "baby": "母嬰", "sports": "運動", "books": "書籍"},
}
_HANT_REGIONS = frozenset({"TW", "HK", "MO"})


@lru_cache(maxsize=64)
def _category_table(locale: str) -> dict[str, str]:
    tag = normalize_locale(locale)
    parts = tag.split("-")
    if parts[0] != "zh":
        return {}
    hant = "Hant" in parts[1:] or ("Hans" not in parts[1:] and parts[-1] in _HANT_REGIONS)
    return _CATEGORY_NAMES["zh-Hant" if hant else "zh-Hans"]


def category_name(category: Any, locale: str) -> str:
    """A product category as customers read it in `locale`: `category_name("books", "zh-CN")` → `图书`.

    Unknown categories and locales without a table keep the raw value; None/NA gives "" (so
    `(history.top_category | category_name(locale)) or "我们的商品"` works in templates).
    """
    if not isinstance(category, str):
        try:
            missing = category is None or bool(category != category)  # None or NaN
        except TypeError:  # pd.NA: a comparison gives NA, whose truth value is ambiguous
            missing = True
        if missing:
            return ""
    text = str(category).strip()
    if not text:
        return ""
    return _category_table(locale).get(text.lower(), text)


FILTERS = {"category_name": category_name, "display_name": display_name, "money": money, "date": format_date,
           "percent": percent, "zhe": zhe}
