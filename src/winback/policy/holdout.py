"""The holdout: a stable hash of (campaign id, customer id), optionally stratified by value tier."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def holdout_hash(campaign_id: str, customer_ids: pd.Series) -> pd.Series:
    """Uniform in [0, 1) from blake2b of f"{campaign_id}:{customer_id}"; the same on every run and machine."""
    prefix = f"{campaign_id}:".encode()
    values = [
        int.from_bytes(hashlib.blake2b(prefix + str(cid).encode(), digest_size=8).digest(), "big")
        for cid in customer_ids.to_numpy()
    ]
    # 53 high bits → an exactly representable double in [0, 1).
    u = (np.asarray(values, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return pd.Series(u, index=customer_ids.index, dtype="float64")


def assign_holdout(customer_ids: pd.Series, campaign_id: str, share: float,
                   strata: pd.Series | None = None, *, hashes: pd.Series | None = None) -> pd.Series:
    """True for customers held out. Unstratified: hash < share. Stratified: within each stratum the
    round(share × n) customers with the smallest hash (ties by id), so each tier gets its share exactly
    while a customer's arm depends only on the hash ranking, never on row order. `hashes` passes
    precomputed `holdout_hash` values (aligned) to save recomputing them."""
    u = holdout_hash(campaign_id, customer_ids) if hashes is None else hashes.reindex(customer_ids.index)
    if share <= 0 or customer_ids.empty:
        return pd.Series(False, index=customer_ids.index)
    if strata is None:
        return u < share
    frame = pd.DataFrame({"u": u, "id": customer_ids.astype("string"),
                          "s": strata.astype("string").fillna("(none)")})
    frame = frame.sort_values(["s", "u", "id"], kind="stable")
    rank = frame.groupby("s", sort=False).cumcount()
    size = frame.groupby("s", sort=False)["u"].transform("size")
    # floor(x + 0.5): round half up, so the share is the nearest whole number of customers.
    quota = np.floor(size * share + 0.5)
    held = (rank < quota).reindex(customer_ids.index)
    return held.astype(bool)
