"""The demo world: generated customers, orders and complaints with a known ground-truth response model.

`generate_world` builds it (model in `winback.demo.world`), `write_world`/`read_world` store it,
`winback.demo.truth` documents the 30-day return probabilities with and without each offer,
`simulate_returns` plays a campaign's contacts against that truth and `true_uplift` states the
uplift a perfect measurement would find.
"""

from winback.demo.returns import simulate_returns, simulated_order_prefix
from winback.demo.storage import read_world, write_world
from winback.demo.truth import true_uplift
from winback.demo.world import World, WorldParams, generate_world

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
