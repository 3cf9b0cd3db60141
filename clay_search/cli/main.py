"""The ``clay-search`` command. One subcommand per module in this package.

Each module named in ``COMMANDS`` defines ``register(app)``.
"""

from __future__ import annotations

import importlib

import typer

COMMANDS = ["info", "ingest", "search", "import_", "index", "train", "eval", "app", "weights",
            "finetune", "predict"]

app = typer.Typer(
    name="clay-search",
    help="Earth-observation embeddings (Clay) and similarity search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Earth-observation embeddings (Clay) and similarity search."""


for _name in COMMANDS:
    importlib.import_module(f"clay_search.cli.{_name}").register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
