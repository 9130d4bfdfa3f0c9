"""The `winback` command line: thin typer wrappers over the steps of the flow of data.

Each step package that has commands owns a `cli.py` with `register(app)`; this module gathers
them, so a package adds its commands without touching this file. Errors from the library
(`WinbackError`) are printed as `Error: …` with a hint and exit code 1; `--debug` shows the traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console
from rich.text import Text

import winback
from winback.errors import WinbackError

app = typer.Typer(
    name="winback",
    help="Win lapsed customers back: segment, target, offer, render, send, and measure against a holdout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _register_commands() -> None:
    """Import `winback.<package>.cli` for every step package that has one and let it add its commands."""
    for info in sorted(pkgutil.iter_modules(winback.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"winback.{info.name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name == f"winback.{info.name}.cli":
                continue
            raise
        module.register(app)


@app.callback()
def _root() -> None:
    """Win lapsed customers back: segment, target, offer, render, send, and measure against a holdout."""


@app.command("version")
def version() -> None:
    """Print the installed winback version."""
    typer.echo(winback.__version__)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (also usable from tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        # Standalone mode: typer prints usage errors itself and exits through SystemExit.
        app(args=args, prog_name="winback", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except WinbackError as exc:
        if debug:
            raise
        # The message may hold anything (a path, a provider's answer, a customer's name): printed as
        # text, never read as rich markup (`[/red]` in it would otherwise end in a MarkupError).
        err_console.print(Text.assemble(("Error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(Text(f"Hint: {exc.hint}"), highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("Interrupted.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
