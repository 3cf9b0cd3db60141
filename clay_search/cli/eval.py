"""``clay-search eval``: embedding quality on held-out chips, through the path users take.

The options are the fields of :class:`clay_search.evaluation.EvalParams` (defined once there,
shared with :func:`clay_search.evaluation.evaluate`); this module adds ``--out`` and
``--verbose`` and prints the tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from clay_search.cli.options import VerboseOpt, derived_command, keyword
from clay_search.evaluation import EvalParams

OutOpt = Annotated[Path | None, typer.Option("--out", help="Write the JSON report here.")]


def _eval(out: Path | None = None, verbose: bool = False, **options: Any) -> None:
    """kNN precision@k and a simulated labelling session through ingest + search."""
    from clay_search.evaluation import evaluate, report_markdown

    report = evaluate(**options)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(f"model {report['model_id']} ({report['wall_s']} s)\n")
    typer.echo(report_markdown(report))


eval_cmd = derived_command(
    _eval,
    EvalParams,
    tail=[keyword("out", OutOpt, None), keyword("verbose", VerboseOpt, False)],
)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the CLI."""
    app.command("eval")(eval_cmd)
