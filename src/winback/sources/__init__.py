"""Sources: read customers, orders and complaints from files or databases, validate, quarantine.

Where data can come from (each argument of `load_inputs` independently):

- a CSV file (`.csv`): UTF-8 with or without BOM by default; GBK/GB18030 exports with
  `encoding="gb18030"`. All columns are read as text (ids and phone numbers keep leading zeros);
  `;`, tab and `|` separators are recognised from the header. A decoding failure names the file,
  line, data row and byte.
- a Parquet file (`.parquet`, `.pq`), typed or text columns.
- a DuckDB database, read-only: `duckdb:///relative/shop.duckdb?table=orders`,
  `duckdb:////abs/shop.duckdb?table=main.orders` or `…?query=SELECT * FROM orders WHERE amount > 0`.
- any SQLAlchemy URL: `postgresql+psycopg://user@host/db?table=crm.customers` or `…?query=SELECT …`.
  `table=`/`query=` are removed before the engine is created; other parameters pass through.
  `query=` must come last and takes the rest of the URL (percent-decoded; `+` is kept).
  Nothing is ever committed; passwords never appear in labels, quarantine rows or errors.
- a pandas DataFrame (labelled `<customers frame>` etc. in reports).

Column names are trimmed and lower-cased, then must match the contract names in
`docs/CONTRACTS.md` ("Validated inputs"); a missing required column is a `DataError` naming the
file and the column. Row rules, reason codes and defaults: see `winback.sources.validate`.

    inputs = load_inputs("customers.csv", "orders.parquet", encoding="gb18030",
                         quarantine_path="out/quarantine.csv")
    console.print(render_validation_summary(inputs))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "CODES",
    "Inputs",
    "load_inputs",
    "read_source",
    "render_validation_summary",
    "validate_inputs",
    "write_quarantine",
]

if TYPE_CHECKING:
    from winback.sources.load import load_inputs, write_quarantine
    from winback.sources.readers import read_source
    from winback.sources.summary import render_validation_summary
    from winback.sources.validate import CODES, Inputs, validate_inputs

_HOME = {
    "CODES": "validate",
    "Inputs": "validate",
    "validate_inputs": "validate",
    "load_inputs": "load",
    "write_quarantine": "load",
    "read_source": "readers",
    "render_validation_summary": "summary",
}


def __getattr__(name: str) -> Any:
    # Lazy: `winback --help` imports this package while looking for a cli module; pandas,
    # phonenumbers and friends load only when a source is really read.
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"winback.sources.{_HOME[name]}"), name)
    raise AttributeError(f"module 'winback.sources' has no attribute {name!r}")
