"""Write and read a demo world folder: Parquet frames (+ optional CSV copies), managers, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from winback.demo.world import World
from winback.errors import DataError
from winback.sources.files import write_table

FRAMES = ("customers", "orders", "complaints", "truth")
METADATA_FILE = "world.json"
DEPARTED_FILE = "departed_managers.txt"
MANAGERS_FILE = "managers.parquet"


def write_world(world: World, out_dir: str | Path, csv: bool = False) -> list[Path]:
    """Write the world's frames as Parquet (and CSV copies when `csv`) into `out_dir`; returns the files."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder: {exc.strerror}", file=str(out)) from None
    written: list[Path] = []
    for name in FRAMES:
        frame = getattr(world, name)
        written.append(write_table(frame, out / f"{name}.parquet"))
        if csv:
            written.append(write_table(frame, out / f"{name}.csv"))
    written.append(write_table(world.managers, out / MANAGERS_FILE))
    # The segmentation's optional input: one departed account manager per line, `name,YYYY-MM-DD`.
    departed = out / DEPARTED_FILE
    departed.write_text("".join(f"{m}\n" for m in world.departed_manager_entries), encoding="utf-8")
    written.append(departed)
    meta = {
        "generator": "winback.demo",
        "seed": world.seed,
        "as_of": world.as_of.isoformat() if world.as_of is not None else None,
        "customers": len(world.customers),
        "orders": len(world.orders),
        "complaints": len(world.complaints),
        "departed_managers": world.departed_manager_entries,
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    written.append(out / METADATA_FILE)
    return written


def read_world(directory: str | Path) -> World:
    """Read a folder written by `write_world` back into a `World` (Parquet files)."""
    path = Path(directory)
    if not path.is_dir():
        raise DataError("demo world folder not found", file=str(path),
                        hint="create one with `winback demo-data --out DIR`")
    frames = {}
    for name in FRAMES:
        file = path / f"{name}.parquet"
        if not file.exists():
            raise DataError(f"{name}.parquet is missing; not a demo world folder", file=str(path))
        try:
            frames[name] = pd.read_parquet(file)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read: {exc}", file=str(file)) from None
    managers_file = path / MANAGERS_FILE
    managers = (pd.read_parquet(managers_file) if managers_file.exists()
                else pd.DataFrame({"name": pd.Series(dtype="str"),
                                   "left_at": pd.Series(dtype="datetime64[ns, UTC]")}))
    as_of = seed = None
    meta_file = path / METADATA_FILE
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read: {exc}", file=str(meta_file)) from None
        as_of = pd.Timestamp(meta["as_of"]).tz_convert("UTC") if meta.get("as_of") else None
        seed = meta.get("seed")
    return World(**frames, managers=managers, as_of=as_of, seed=seed)
