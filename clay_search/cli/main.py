"""The ``clay-search`` command. One subcommand per module in this package.

Each module named in ``COMMANDS`` defines ``register(app)``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from clay_search.cli.options import CLICK_EXCEPTION, VerboseOpt

COMMANDS = [
    "info",
    "ingest",
    "search",
    "chips",
    "import_",
    "export",
    "index",
    "train",
    "eval",
    "app",
    "weights",
    "changes",
    "finetune",
    "predict",
]

app = typer.Typer(
    name="clay-search",
    help="Earth-observation embeddings (Clay) and similarity search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(verbose: VerboseOpt = False) -> None:
    """Earth-observation embeddings (Clay) and similarity search."""


for _name in COMMANDS:
    importlib.import_module(f"clay_search.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """The ``clay-search`` entry point: ``app`` with usage errors (unknown option, a value that
    does not parse) printed in one line and exit status 2, like every other user error."""
    try:
        rv = app(args=argv, prog_name="clay-search", standalone_mode=False)
    except CLICK_EXCEPTION as e:
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        typer.secho(f"Error: {message}{hint}", fg=typer.colors.RED, err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.secho("Aborted.", err=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
