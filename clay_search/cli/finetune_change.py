"""``clay-search finetune change``: train a supervised change head on before/after pairs.

Registered on the ``finetune`` group by :func:`clay_search.cli.finetune.register`; the training
logic is :func:`clay_search.change_task.finetune_change`. See docs/change.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.finetune import (
    DEFAULT_CHIPS,
    ChipOptions,
    ClassWeightsOpt,
    OutOpt,
    TrainOptions,
    _report,
    _weights_list,
    chip_options,
    train_options,
)
from clay_search.cli.options import handle_errors


@handle_errors
@train_options(epochs=20, batch_size=16)
@chip_options()
def change(
    pairs: Annotated[
        Path,
        typer.Option(
            "--pairs",
            help="CSV with columns before,after,mask (paths relative to the CSV; masks 0/1 "
            "of the images' size and grid).",
        ),
    ],
    out: OutOpt,
    chips: ChipOptions = DEFAULT_CHIPS,
    fusion: Annotated[
        str,
        typer.Option(
            "--fusion",
            help="How the two dates' features meet: concat+diff (before, after, |after - "
            "before|) or diff.",
        ),
    ] = "concat+diff",
    ignore_index: Annotated[
        int | None,
        typer.Option("--ignore-index", help="Mask value for unlabelled pixels (not trained)."),
    ] = None,
    class_weights: ClassWeightsOpt = "balanced",
    *,
    train: TrainOptions,
) -> None:
    """Supervised change: a siamese head on the encoder's features of both dates -> a change
    mask (apply with `clay-search predict --head DIR --before A --after B --out change.tif`)."""
    from clay_search.change_task import finetune_change

    run = finetune_change(
        out,
        pairs=pairs,
        **chips.reading(),
        fusion=fusion,
        ignore_index=ignore_index,
        class_weights=_weights_list(class_weights),
        **train.run_kwargs(),
    )
    _report(run, train.quiet)
