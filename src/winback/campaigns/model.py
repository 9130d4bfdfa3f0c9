"""The campaign definition: pydantic models with `extra="forbid"` and defaults a CRM team would pick.

A campaign YAML holds who is targeted (audience), how they may be contacted (policy), what they
may be offered (offers, priors, economics, budget), the experiment design (holdout, minimum
detectable effect, seed) and the cadence of steps. `winback.campaigns.loading.load_campaign`
reads a file into `Campaign` and turns validation errors into `file: field.path: message`.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from winback.vocab import CHANNELS, LAPSE_STAGES, MESSAGE_CHANNELS, OFFER_KINDS, REASONS, VALUE_TIERS

ValueTier = Literal[VALUE_TIERS]
LapseStage = Literal[LAPSE_STAGES]
Reason = Literal[REASONS]
OfferKind = Literal[OFFER_KINDS]
Channel = Literal[CHANNELS]
MessageChannel = Literal[MESSAGE_CHANNELS]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Offer kinds that hand the customer something to redeem, hence a single-use code by default.
COUPON_KINDS = frozenset({"percent_off", "amount_off", "free_shipping", "birthday_gift", "bonus_points"})


def _between(low: float, high: float):
    """A validator that keeps a number inside [low, high] with a message users understand."""

    def check(value: float | None) -> float | None:
        if value is not None and not (low <= value <= high):
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return check


def _positive(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative(value: float | None) -> float | None:
    if value is not None and value < 0:
        raise ValueError("must be 0 or more")
    return value


def _identifier(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError("must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]
Share = Annotated[float, AfterValidator(_between(0.0, 0.9))]
Probability = Annotated[float, AfterValidator(_between(0.0, 1.0))]
Percent = Annotated[float, AfterValidator(_between(1, 90))]
PositiveMoney = Annotated[float, AfterValidator(_positive)]
Money = Annotated[float, AfterValidator(_non_negative)]
PositiveInt = Annotated[int, AfterValidator(_positive)]
NonNegativeInt = Annotated[int, AfterValidator(_non_negative)]


class Strict(BaseModel):
    """Base of every campaign model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Sources(Strict):
    """Where the campaign's data lives; relative paths are relative to the campaign file."""

    customers: str | None = None
    orders: str | None = None
    complaints: str | None = None
    encoding: str = "utf-8-sig"
    departed_managers: list[str] = Field(default_factory=list)
    # `name` or `name,YYYY-MM-DD` (the day they left) per entry / line, e.g. a demo world's departed_managers.txt
    departed_managers_file: str | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8-sig, gb18030)") from None
        return value

    def resolved(self, base_dir: Path | None) -> dict[str, str | None]:
        """The three source locations with file paths made absolute against `base_dir` (URLs kept)."""
        out: dict[str, str | None] = {}
        for name in ("customers", "orders", "complaints"):
            value = getattr(self, name)
            if value is None or "://" in value or base_dir is None or Path(value).is_absolute():
                out[name] = value
            else:
                out[name] = str((base_dir / value).resolve())
        return out


class Brand(Strict):
    """How the shop signs its messages; also the currency every amount in the campaign is in."""

    name: str = "Our shop"
    url: str = "https://example.com"
    currency: str = "CNY"
    support_phone: str | None = None
    sender_email: str | None = None
    sender_name: str | None = None
    sms_sender: str | None = None

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError("must be an ISO 4217 code like CNY or USD")
        return value


class Audience(Strict):
    """Who the campaign is about, from the segment columns; everyone else does not appear in the plan."""

    lapse_stages: list[LapseStage] = Field(default_factory=lambda: ["at_risk", "lapsing", "lapsed"])
    value_tiers: list[ValueTier] = Field(default_factory=lambda: list(VALUE_TIERS))
    reasons: list[Reason] | None = None
    p_alive_min: Probability = 0.0
    p_alive_max: Probability = 1.0
    min_days_since_last_order: NonNegativeInt | None = None
    max_days_since_last_order: NonNegativeInt | None = None

    @model_validator(mode="after")
    def _ranges(self) -> Audience:
        if self.p_alive_min > self.p_alive_max:
            raise ValueError("@p_alive_min: must not be above p_alive_max")
        lo, hi = self.min_days_since_last_order, self.max_days_since_last_order
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("@min_days_since_last_order: must not be above max_days_since_last_order")
        return self


class Holdout(Strict):
    """The randomized control group: a stable hash of (campaign id, customer id) below `share`."""

    share: Share = 0.10
    stratify_by: Literal["value_tier"] | None = "value_tier"


class Eligibility(Strict):
    """Which customers an offer may go to; None means any."""

    value_tiers: list[ValueTier] | None = None
    reasons: list[Reason] | None = None
    lapse_stages: list[LapseStage] | None = None


class Offer(Strict):
    """One offer of the catalog: its kind, value, cost model, eligibility, template and cap."""

    id: Identifier
    kind: OfferKind
    template: Identifier
    title: str | dict[str, str] | None = None
    percent: Percent | None = None
    amount: PositiveMoney | None = None
    min_spend: Money | None = None
    max_discount: PositiveMoney | None = None
    points: PositiveInt | None = None
    point_value: PositiveMoney = 0.01
    shipping_cost: Money | None = None
    gift_cost: Money | None = None
    fixed_cost: Money = 0.0
    birthday_days_before: NonNegativeInt = 3
    birthday_days_after: NonNegativeInt = 14
    survey_url: str | None = None
    valid_days: PositiveInt = 14
    redemption_rate: Probability = 1.0
    eligibility: Eligibility = Field(default_factory=Eligibility)
    cap: PositiveInt | None = None
    coupon: bool | None = None
    prior_uplift: float | dict[Reason, float] | None = None

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Offer:
        needs = {
            "percent_off": ["percent"],
            "amount_off": ["amount"],
            "bonus_points": ["points"],
            "free_shipping": ["shipping_cost"],
            "birthday_gift": ["gift_cost"],
            "service_recovery": ["survey_url"],
        }.get(self.kind, [])
        for name in needs:
            if getattr(self, name) is None:
                raise ValueError(f"@{name}: required for {self.kind} offers")
        value_fields = {"percent": "percent_off", "amount": "amount_off", "points": "bonus_points",
                        "shipping_cost": "free_shipping", "gift_cost": "birthday_gift"}
        for name, kind in value_fields.items():
            if getattr(self, name) is not None and self.kind != kind and not (
                name == "amount" and self.kind == "birthday_gift"
            ):
                raise ValueError(f"@{name}: only used by {kind} offers, not {self.kind}")
        if self.kind == "service_recovery" and self.eligibility.reasons is None:
            # Service recovery is for customers whose likely reason is an unresolved complaint.
            self.eligibility = self.eligibility.model_copy(update={"reasons": ["service"]})
        if self.coupon is None:
            self.coupon = self.kind in COUPON_KINDS
        return self


class FrequencyCap(Strict):
    """At most `max_messages` win-back contacts per `per_days` days (all campaigns, from the ledger)."""

    max_messages: PositiveInt = 2
    per_days: PositiveInt = 14


class Window(Strict):
    """Allowed local send hours [start, end); a message due outside moves to the next start."""

    start: time = time(9, 0)
    end: time = time(21, 0)

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start >= self.end:
            raise ValueError("@end: must be after start (windows crossing midnight are not supported)")
        return self


def _default_quiet_hours() -> dict[str, Window]:
    return {
        "default": Window(start=time(9), end=time(21)),
        # SMS interrupts: stricter hours (also what carriers and CN/US marketing rules expect).
        "sms": Window(start=time(10), end=time(20)),
        "call_task": Window(start=time(9, 30), end=time(18)),
    }


def _default_caps() -> dict[str, FrequencyCap]:
    return {
        "email": FrequencyCap(max_messages=2, per_days=14),
        "sms": FrequencyCap(max_messages=2, per_days=14),
        "call_task": FrequencyCap(max_messages=1, per_days=30),
    }


class Policy(Strict):
    """Contact policy: consent columns, frequency caps, quiet hours, minimum gap since the last order."""

    consent: dict[Channel, str | None] = Field(
        default_factory=lambda: {"email": "email_opt_in", "sms": "sms_opt_in", "webhook": None, "call_task": None}
    )
    frequency_caps: dict[Literal[(*CHANNELS, "any")], FrequencyCap] = Field(default_factory=_default_caps)
    min_days_since_last_order: NonNegativeInt = 14
    quiet_hours: dict[Literal[(*CHANNELS, "default")], Window] = Field(default_factory=_default_quiet_hours)
    default_timezone: str = "Asia/Shanghai"
    default_locale: str = "zh-CN"
    negative_value: Literal["exclude", "reminder"] = "exclude"
    # The cap protects customers from several campaigns at once; this campaign's own cadence is
    # designed, so by default its earlier steps do not count against it.
    cap_includes_own_cadence: bool = False
    # How long a message the provider throttles (429 / Retry-After) may keep waiting before it is
    # deferred to a later dispatch; unset: until the end of that day's send window in the recipient's zone.
    throttle_wait_minutes: PositiveInt | None = None

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    def window(self, channel: str) -> Window:
        """The quiet-hours window that applies to `channel`."""
        return self.quiet_hours.get(channel) or self.quiet_hours.get("default") or Window()


class HumanRule(Strict):
    """Customers matching every given condition are routed to their account manager (`call_task`)."""

    value_tiers: list[ValueTier] | None = None
    reasons: list[Reason] | None = None
    lapse_stages: list[LapseStage] | None = None
    complaint_open: bool | None = None


class HumanFollowup(Strict):
    """定期回访: route the most valuable slipping customers to a call by their account manager.

    A customer whose manager has left (the sources' departed managers) is called by `fallback_manager`,
    else put in the `team_queue` list, never by the one who left. A call needs a phone or an e-mail on
    file; without either the task is refused and the customer treated as if they had no manager.
    """

    rules: list[HumanRule] = Field(default_factory=list)
    no_manager: Literal["exclude", "message"] = "message"
    with_offer: bool = True
    fallback_manager: str | None = None
    team_queue: str = "team_queue"

    @field_validator("fallback_manager", "team_queue")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value.strip() if value is not None else None


class OfferGuard(Strict):
    """Against coupon-only buyers: a customer whose share of discounted orders is at least
    `max_discount_share` (over at least `min_orders` orders) is offered no discount (`coupon_abuse`)."""

    max_discount_share: Probability | None = None
    min_orders: PositiveInt = 3


class CadenceStep(Strict):
    """One step of the cadence; step 1 is day 0, later steps only reach customers who have not returned."""

    step: PositiveInt
    day: NonNegativeInt
    channel: Channel | None = None
    template: Identifier | None = None
    offer: Identifier | None = None
    if_not_returned: bool = True


class Economics(Strict):
    """Money assumptions of the expected net value: margin on returning revenue and cost per contact."""

    gross_margin: Annotated[float, AfterValidator(_between(0.01, 1.0))] = 1.0
    contact_costs: dict[Channel, Money] = Field(
        default_factory=lambda: {"email": 0.0, "sms": 0.05, "webhook": 0.0, "call_task": 0.0}
    )


class Priors(Strict):
    """Prior return probabilities: baseline by tier × stage, uplift by offer kind × reason, tier factor.

    Defaults are conservative figures in the range published win-back tests report (a few points of
    incremental return rate for a discount, more for service recovery after a complaint).
    """

    base_return: dict[ValueTier, Probability] = Field(
        default_factory=lambda: {"platinum": 0.22, "gold": 0.15, "iron": 0.08, "lead": 0.04}
    )
    stage_factor: dict[LapseStage, Annotated[float, AfterValidator(_between(0, 5))]] = Field(
        default_factory=lambda: {"active": 1.6, "at_risk": 1.3, "lapsing": 1.0, "lapsed": 0.6,
                                 "lost": 0.3, "no_orders": 0.2}
    )
    uplift: dict[OfferKind, dict[Reason, Annotated[float, AfterValidator(_between(-0.5, 0.5))]]] = Field(
        default_factory=lambda: {
            "reminder":         {"service": 0.000, "price": 0.010, "manager_left": 0.015, "competitor": 0.010, "forgotten": 0.035, "none": 0.010},
            "percent_off":      {"service": 0.015, "price": 0.080, "manager_left": 0.030, "competitor": 0.050, "forgotten": 0.050, "none": 0.020},
            "amount_off":       {"service": 0.015, "price": 0.070, "manager_left": 0.030, "competitor": 0.050, "forgotten": 0.050, "none": 0.020},
            "bonus_points":     {"service": 0.010, "price": 0.040, "manager_left": 0.030, "competitor": 0.030, "forgotten": 0.040, "none": 0.015},
            "free_shipping":    {"service": 0.010, "price": 0.040, "manager_left": 0.020, "competitor": 0.030, "forgotten": 0.030, "none": 0.010},
            "birthday_gift":    {"service": 0.030, "price": 0.045, "manager_left": 0.040, "competitor": 0.040, "forgotten": 0.060, "none": 0.030},
            "service_recovery": {"service": 0.100, "price": 0.010, "manager_left": 0.030, "competitor": 0.010, "forgotten": 0.010, "none": 0.000},
        }
    )
    tier_factor: dict[ValueTier, Annotated[float, AfterValidator(_between(0, 5))]] = Field(
        default_factory=lambda: {"platinum": 1.0, "gold": 1.0, "iron": 1.0, "lead": 1.0}
    )
    # A call by the account manager on top of whatever offer they bring.
    call_uplift: dict[Reason, Annotated[float, AfterValidator(_between(-0.5, 0.5))]] = Field(
        default_factory=lambda: {"service": 0.15, "price": 0.05, "manager_left": 0.20, "competitor": 0.08,
                                 "forgotten": 0.10, "none": 0.03}
    )


class Coupons(Strict):
    """Shape of the single-use codes."""

    length: Annotated[int, AfterValidator(_between(6, 32))] = 10
    prefix: str = ""
    group: Annotated[int, AfterValidator(_between(2, 16))] | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Z0-9-]{1,12}", value):
            raise ValueError("must be up to 12 capital letters, digits or '-'")
        return value


class Learning(Strict):
    """How offer choice explores when a learner (Thompson sampling) is given."""

    thompson_buckets: Annotated[int, AfterValidator(_between(1, 4096))] = 64


def _default_cadence() -> list[CadenceStep]:
    return [CadenceStep(step=1, day=0)]


class Campaign(Strict):
    """A win-back campaign as defined in `campaigns/*.yaml`."""

    id: Identifier
    name: str
    description: str | None = None
    sources: Sources = Field(default_factory=Sources)
    brand: Brand = Field(default_factory=Brand)
    audience: Audience = Field(default_factory=Audience)
    holdout: Holdout = Field(default_factory=Holdout)
    channels: list[MessageChannel] = Field(default_factory=lambda: ["email", "sms"])
    offers: list[Offer]
    budget: PositiveMoney | None = None
    policy: Policy = Field(default_factory=Policy)
    human_followup: HumanFollowup = Field(default_factory=HumanFollowup)
    offer_guard: OfferGuard = Field(default_factory=OfferGuard)
    economics: Economics = Field(default_factory=Economics)
    priors: Priors = Field(default_factory=Priors)
    coupons: Coupons = Field(default_factory=Coupons)
    learning: Learning = Field(default_factory=Learning)
    attribution_window_days: Annotated[int, AfterValidator(_between(1, 365))] = 30
    cadence: list[CadenceStep] = Field(default_factory=_default_cadence)
    templates_dir: str = "templates"
    locale_fallback: dict[str, str] = Field(default_factory=lambda: {"zh-*": "zh-CN", "*": "en-US"})
    min_detectable_effect: Annotated[float, AfterValidator(_between(0.001, 0.5))] = 0.02
    power_alpha: Annotated[float, AfterValidator(_between(0.001, 0.2))] = 0.05
    power: Annotated[float, AfterValidator(_between(0.5, 0.99))] = 0.8
    seed: int = 0
    segments_model: Literal["auto", "bgnbd", "mbgnbd", "pareto-nbd"] = "auto"

    _base_dir: Path | None = PrivateAttr(default=None)
    _source_file: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _references(self) -> Campaign:
        if not self.channels:
            raise ValueError("@channels: list at least one channel")
        for i, channel in enumerate(self.channels):
            if channel in self.channels[:i]:
                raise ValueError(f"@channels[{i}]: {channel!r} is listed twice")
        if not self.offers:
            raise ValueError("@offers: define at least one offer")
        seen: dict[str, int] = {}
        for i, offer in enumerate(self.offers):
            if offer.id in seen:
                raise ValueError(f"@offers[{i}].id: duplicate offer id {offer.id!r} (also offers[{seen[offer.id]}])")
            seen[offer.id] = i
        if self.policy.negative_value == "reminder" and not any(o.kind == "reminder" for o in self.offers):
            raise ValueError("@policy.negative_value: 'reminder' needs an offer of kind reminder in offers")
        steps = [s.step for s in self.cadence]
        if steps != list(range(1, len(steps) + 1)):
            raise ValueError(f"@cadence: steps must be numbered 1, 2, 3, … in order (got {steps})")
        if self.cadence[0].day != 0:
            raise ValueError("@cadence[0].day: step 1 is sent on day 0")
        for i, step in enumerate(self.cadence):
            if i and step.day <= self.cadence[i - 1].day:
                raise ValueError(f"@cadence[{i}].day: must be later than step {i}'s day {self.cadence[i - 1].day}")
            if step.channel is not None and step.channel not in self.channels:
                raise ValueError(
                    f"@cadence[{i}].channel: {step.channel!r} is not one of the campaign's channels {self.channels}"
                )
            if step.offer is not None and step.offer not in seen:
                raise ValueError(f"@cadence[{i}].offer: unknown offer {step.offer!r} (offers: {sorted(seen)})")
            if step.day >= self.attribution_window_days:
                raise ValueError(
                    f"@cadence[{i}].day: day {step.day} is outside the attribution window "
                    f"({self.attribution_window_days} days)"
                )
        for key, value in self.locale_fallback.items():
            if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*|[A-Za-z]{2,3}-\*|\*", key):
                raise ValueError(f"@locale_fallback: {key!r} is not a locale pattern like zh-* or *")
            if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", value):
                raise ValueError(f"@locale_fallback: {value!r} is not a locale like zh-CN")
        return self

    def offer(self, offer_id: str) -> Offer:
        """The offer with this id (KeyError when absent)."""
        for offer in self.offers:
            if offer.id == offer_id:
                return offer
        raise KeyError(offer_id)

    @property
    def budget_amount(self) -> float | None:
        """The budget in the brand's currency (None = no cap)."""
        return self.budget

    @property
    def base_dir(self) -> Path | None:
        """The folder of the campaign file (relative source paths are resolved against it)."""
        return self._base_dir

    @property
    def source_file(self) -> str | None:
        """The campaign file this campaign was loaded from, as given."""
        return self._source_file

    def templates_path(self) -> Path:
        """The templates folder: absolute, else next to the campaign file, else its parent, else the cwd."""
        path = Path(self.templates_dir)
        if path.is_absolute():
            return path
        if self._base_dir is not None:
            for base in (self._base_dir, self._base_dir.parent):
                if (base / path).is_dir():
                    return (base / path).resolve()
        return path.resolve()

    def summary_dict(self) -> dict[str, Any]:
        """A short description for logs and artifacts."""
        return {"id": self.id, "name": self.name, "channels": self.channels,
                "offers": [o.id for o in self.offers], "holdout_share": self.holdout.share,
                "budget": self.budget, "currency": self.brand.currency, "steps": len(self.cadence)}
