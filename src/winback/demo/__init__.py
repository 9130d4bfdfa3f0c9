"""The demo world: generated customers, orders and complaints with a known ground-truth response model.

`generate_world` builds it (model in `winback.demo.world`), `write_world`/`read_world` store it,
`winback.demo.truth` documents the 30-day return probabilities with and without each offer,
`simulate_returns` plays a campaign's contacts against that truth and `true_uplift` states the
uplift a perfect measurement would find.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "World",
    "WorldParams",
    "generate_world",
    "read_world",
    "simulate_returns",
    "simulated_order_prefix",
    "true_uplift",
    "write_world",
]

if TYPE_CHECKING:
    from winback.demo.returns import simulate_returns, simulated_order_prefix
    from winback.demo.storage import read_world, write_world
    from winback.demo.truth import true_uplift
    from winback.demo.world import World, WorldParams, generate_world

_HOME = {
    "simulate_returns": "returns",
    "simulated_order_prefix": "returns",
    "read_world": "storage",
    "write_world": "storage",
    "true_uplift": "truth",
    "World": "world",
    "WorldParams": "world",
    "generate_world": "world",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.demo.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.demo' has no attribute {name!r}")
