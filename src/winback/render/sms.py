"""SMS segment counting: GSM-7 (3GPP TS 23.038) or UCS-2, the way carriers bill a message.

A message that fits the GSM 7-bit default alphabet is sent in GSM-7: 160 septets in a single SMS,
153 per part once it is concatenated (the user data header takes 7). Characters of the extension
table (`^{}\\[~]|€` and form feed) are an escape plus a character: 2 septets, never split between two
parts. Any other character (Chinese, most emoji, curly quotes) switches the whole message to UCS-2:
70 UTF-16 code units single, 67 per part; a character outside the BMP (most emoji) is a surrogate pair
that counts 2 and is not split either.
"""

from __future__ import annotations

import math
import re

GSM7 = "GSM-7"
UCS2 = "UCS-2"

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = "\f^{}\\[~]|€"

SINGLE_LIMIT = {GSM7: 160, UCS2: 70}
PART_LIMIT = {GSM7: 153, UCS2: 67}

_NOT_GSM = re.compile("[^" + re.escape(GSM7_BASIC + GSM7_EXTENSION) + "]")
_GSM_EXT = re.compile("[" + re.escape(GSM7_EXTENSION) + "]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def sms_encoding(text: str) -> str:
    """`GSM-7` when every character is in the GSM 7-bit alphabet (basic or extension), else `UCS-2`."""
    return UCS2 if _NOT_GSM.search(text) else GSM7


def sms_units(text: str) -> tuple[int, str]:
    """The message length in its encoding's units (septets or UTF-16 code units) and the encoding."""
    if _NOT_GSM.search(text):
        return len(text) + len(_ASTRAL.findall(text)), UCS2
    return len(text) + len(_GSM_EXT.findall(text)), GSM7


def sms_segments(text: str) -> tuple[int, str]:
    """How many SMS parts `text` is sent as, and the encoding: `sms_segments("hi")` → `(1, "GSM-7")`.

    An empty text is 0 segments (nothing to send).
    """
    units, encoding = sms_units(text)
    if units == 0:
        return 0, encoding
    if units <= SINGLE_LIMIT[encoding]:
        return 1, encoding
    part = PART_LIMIT[encoding]
    wide = _GSM_EXT if encoding == GSM7 else _ASTRAL
    if not wide.search(text):
        return math.ceil(units / part), encoding
    # A 2-unit character (escape sequence or surrogate pair) that would straddle a part boundary
    # moves whole into the next part, so count by packing greedily.
    parts, used = 1, 0
    for ch in text:
        width = 2 if wide.match(ch) else 1
        if used + width > part:
            parts += 1
            used = 0
        used += width
    return parts, encoding
