"""``clay-search train``: pretrain a Clay model on the chips of a data folder.

The options are the fields of :class:`clay_search.training.TrainParams` (defined once there,
shared with :func:`clay_search.training.pretrain`); this module adds ``--verbose`` and prints
the summary line.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from clay_search.cli.options import VerboseOpt, derived_command, keyword
from clay_search.training import TrainParams


def _train(verbose: bool = False, **options: Any) -> None:
    """Pretrain Clay (masked reconstruction, optionally a view-consistency loss) on the real imagery
    of a data folder: EuroSAT, BigEarthNet, Landsat-7/8, NAIP, OSCD."""
    from clay_search.training import pretrain

    result = pretrain(**options)
    last = result.losses[-100:]
    mean_last = sum(r["reconstruction_loss"] for r in last) / max(1, len(last))
    typer.echo(
        json.dumps(
            {
                "steps_done": result.steps_done,
                "wall_s": round(result.wall_s, 1),
                "loss_last100": round(mean_last, 4),
                "model_id": result.weights.model_id if result.weights else None,
                "out": str(result.out_dir),
            }
        )
    )


train = derived_command(_train, TrainParams, tail=[keyword("verbose", VerboseOpt, False)])


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train")(train)
