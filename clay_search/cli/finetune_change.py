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
    EpochsOpt,
    FreezeOpt,
    LrOpt,
    MaxTimeOpt,
    OutOpt,
    ResumeOpt,
    SeedOpt,
    UnfreezeOpt,
    ValOpt,
    _common,
    _report,
    _weights_list,
)
from clay_search.cli.options import (
    BandsOpt,
    BatchSizeOpt,
    ChipSizeOpt,
    DeviceOpt,
    ImageSensorOpt,
    QuietOpt,
    StrideOpt,
    VerboseOpt,
    WeightsOpt,
    handle_errors,
    split_list,
)


@handle_errors
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
    weights: WeightsOpt = None,
    freeze: FreezeOpt = True,
    unfreeze_last: UnfreezeOpt = None,
    epochs: EpochsOpt = 20,
    batch_size: BatchSizeOpt = 16,
    lr: LrOpt = 3e-3,
    seed: SeedOpt = 0,
    val_split: ValOpt = 0.2,
    resume: ResumeOpt = True,
    device: DeviceOpt = "auto",
    max_time: MaxTimeOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
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
        **_common(
            weights,
            freeze,
            unfreeze_last,
            epochs,
            batch_size,
            lr,
            seed,
            val_split,
            resume,
            device,
            quiet,
            max_time,
        ),
    )
    _report(run, quiet)
