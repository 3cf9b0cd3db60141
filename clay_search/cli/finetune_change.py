"""``clay-search finetune change``: train a supervised change head on before/after pairs.

Registered on the ``finetune`` group by :func:`clay_search.cli.finetune.register`; the training
logic is :func:`clay_search.change_task.finetune_change`. See docs/change.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.finetune import (
    ClassWeightsOpt,
    OutOpt,
    TrainOptions,
    _report,
    _weights_list,
    train_options,
)
from clay_search.cli.options import (
    BandsOpt,
    ChipSizeOpt,
    ImageSensorOpt,
    StrideOpt,
    handle_errors,
    split_list,
)


@handle_errors
@train_options(epochs=20, batch_size=16)
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
    sensor: ImageSensorOpt = None,
    bands: BandsOpt = None,
    chip_size: ChipSizeOpt = 64,
    stride: StrideOpt = None,
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
        chip_size=chip_size,
        stride=stride,
        sensor=sensor,
        bands=split_list(bands),
        fusion=fusion,
        ignore_index=ignore_index,
        class_weights=_weights_list(class_weights),
        **train.run_kwargs(),
    )
    _report(run, train.quiet)
