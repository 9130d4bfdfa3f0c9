"""The learning interface offer choice uses: a Thompson draw of an offer's uplift per value tier.

`winback.measure` implements the real learner from past campaigns (posteriors of the return
probability with the offer and in the holdout, so it learns uplift rather than raw response);
here are the protocol, the no-data default and a prior-only learner that explores around the priors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Learner(Protocol):
    """Anything that can draw the uplift in return probability of an offer kind for a value tier."""

    def sample_uplift(self, offer_kind: str, value_tier: str, rng: np.random.Generator) -> float | None:
        """One Thompson draw of P(return | offer) − P(return | holdout); None when there is no data."""
        ...


class NullLearner:
    """No past results: offer choice uses the campaign's priors as they are (deterministic)."""

    def sample_uplift(self, offer_kind: str, value_tier: str, rng: np.random.Generator) -> float | None:
        """Always None: no data."""
        return None


class PriorLearner:
    """Thompson sampling from the priors alone: Beta pseudo-counts centred on the prior rates.

    The treated arm is Beta(strength·(b+u), strength·(1−b−u)) and the holdout Beta(strength·b,
    strength·(1−b)); the draw is their difference. Useful to explore before any campaign has run.
    `priors` maps (offer_kind, value_tier) → (baseline, uplift).
    """

    def __init__(self, priors: dict[tuple[str, str], tuple[float, float]], strength: float = 200.0) -> None:
        self.priors = dict(priors)
        self.strength = float(strength)

    def sample_uplift(self, offer_kind: str, value_tier: str, rng: np.random.Generator) -> float | None:
        """A draw of treated minus holdout return probability, or None for an unknown pair."""
        prior = self.priors.get((offer_kind, value_tier))
        if prior is None:
            return None
        base, uplift = prior
        treated = min(max(base + uplift, 1e-4), 1 - 1e-4)
        base = min(max(base, 1e-4), 1 - 1e-4)
        s = self.strength
        return float(rng.beta(s * treated, s * (1 - treated)) - rng.beta(s * base, s * (1 - base)))
