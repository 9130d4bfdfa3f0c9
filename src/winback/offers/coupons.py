"""Single-use coupon codes: unguessable (secrets), readable (no 0/O/1/I), unique across the campaign."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import numpy as np

from winback.errors import ConfigError

# 32 symbols (5 bits each): digits 2-9 and capitals without I and O, so nobody misreads a code aloud.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _normalise(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


def generate_coupon_codes(n: int, *, length: int = 10, prefix: str = "", existing: Iterable[str] = (),
                          group: int | None = None, separator: str = "-") -> list[str]:
    """`n` new codes of `length` random symbols (+ prefix, optional separator every `group` symbols),
    none equal to each other or to any code in `existing` (compared without separators)."""
    if n < 0:
        raise ConfigError(f"cannot generate {n} coupon codes")
    if length < 6:
        raise ConfigError("coupon codes need at least 6 random symbols (30 bits) to be unguessable",
                          field="coupons.length")
    space = len(ALPHABET) ** length
    taken = {_normalise(c) for c in existing if isinstance(c, str)}
    if n + len(taken) > space // 1000:
        # Past ~0.1% occupancy guessing a valid code gets too easy; ask for longer codes instead.
        raise ConfigError(f"{n} codes of {length} symbols would be guessable; raise coupons.length",
                          field="coupons.length")
    codes: list[str] = []
    seen = set(taken)
    prefix_n = _normalise(prefix)
    symbols = np.frombuffer(ALPHABET.encode("ascii"), dtype="S1")
    while len(codes) < n:
        want = n - len(codes)
        # Each random byte & 31 is uniform over the 32 symbols (256 is a multiple of 32): no modulo bias.
        raw = np.frombuffer(secrets.token_bytes(want * length), dtype=np.uint8) & 31
        bodies = symbols[raw].reshape(want, length).view(f"S{length}").ravel()
        for body_b in bodies:
            body = body_b.decode("ascii")
            key = prefix_n + body
            if key in seen:
                continue
            seen.add(key)
            if group:
                body = separator.join(body[i:i + group] for i in range(0, length, group))
            codes.append(f"{prefix}{separator if prefix and group else ''}{body}")
    return codes


def check_unique_codes(codes: Iterable[str | None]) -> list[str]:
    """The codes that appear more than once (ignoring separators and NA); empty when all are unique."""
    seen: set[str] = set()
    dupes: list[str] = []
    for code in codes:
        if not isinstance(code, str):
            continue
        key = _normalise(code)
        if key in seen:
            dupes.append(code)
        seen.add(key)
    return dupes
