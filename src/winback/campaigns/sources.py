"""Where a campaign's data comes from: its own `sources`, a demo world folder, or explicit paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from winback.campaigns.model import Campaign
from winback.errors import ConfigError, DataError

WORLD_FILES = ("customers.parquet", "orders.parquet")


def _read_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError("departed managers file not found", file=str(path))
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def resolve_sources(campaign: Campaign, *, world: str | Path | None = None, customers: str | None = None,
                    orders: str | None = None, complaints: str | None = None) -> dict[str, Any]:
    """Keyword arguments for `winback.sources.load_inputs`: `world` (a `winback demo-data` folder) or
    explicit paths override the campaign's own sources; campaign paths are relative to its file."""
    own = campaign.sources.resolved(campaign.base_dir)
    departed = list(campaign.sources.departed_managers)
    if world is not None:
        if customers or orders or complaints:
            raise ConfigError("use either --world or --customers/--orders/--complaints, not both", field="--world")
        folder = Path(world)
        if not folder.is_dir():
            raise DataError("demo world folder not found", file=str(folder),
                            hint="create one with `winback demo-data --out DIR`")
        for name in WORLD_FILES:
            if not (folder / name).is_file():
                raise DataError(f"{name} is missing; not a demo world folder", file=str(folder))
        paths = {"customers": str(folder / "customers.parquet"), "orders": str(folder / "orders.parquet"),
                 "complaints": str(folder / "complaints.parquet") if (folder / "complaints.parquet").is_file()
                 else None}
        if (folder / "departed_managers.txt").is_file():
            departed += _read_names(folder / "departed_managers.txt")
    elif customers or orders:
        if not (customers and orders):
            raise ConfigError("--customers and --orders go together", field="--customers" if not customers
                              else "--orders")
        paths = {"customers": customers, "orders": orders, "complaints": complaints}
    else:
        paths = {"customers": own["customers"], "orders": own["orders"],
                 "complaints": complaints or own["complaints"]}
        # The departed-managers file goes with the campaign's own sources (a world brings its own).
        if campaign.sources.departed_managers_file:
            path = Path(campaign.sources.departed_managers_file)
            if not path.is_absolute() and campaign.base_dir is not None:
                path = campaign.base_dir / path
            departed += _read_names(path)
        for name in ("customers", "orders"):
            if not paths[name]:
                raise ConfigError(f"no {name} source: set sources.{name} in the campaign or pass --world / "
                                  f"--customers and --orders", path=campaign.source_file, field=f"sources.{name}")
    return {**paths, "encoding": campaign.sources.encoding,
            "departed_managers": tuple(dict.fromkeys(departed)) or None}
