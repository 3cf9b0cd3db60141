"""``clay-search finetune classify|regress|segment``: train a task head on labelled imagery.

Each writes a head folder (``--out``: head.json + head.safetensors, metrics.csv per epoch,
metrics.json, checkpoint.pt for resuming). See docs/finetune.md.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Annotated

import typer

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
    resolve_device,
    split_list,
)
from clay_search.optionset import OptionSet, opt

finetune_app = typer.Typer(
    help="Fine-tune the encoder with a task head (classify, regress, segment).",
    no_args_is_help=True,
)


@dataclass
class FinetuneOptions(OptionSet):
    """The options the ``finetune`` commands share, each defined once (flag, type, default,
    help); the commands take them as the typer aliases below (``FreezeOpt = ...``)."""

    out: Path = opt(MISSING, "Head folder to write.", short="-o")
    freeze: bool = opt(
        True,
        "Freeze the whole encoder (default) or train all of it.",
        flag="--freeze/--no-freeze",
    )
    unfreeze_last: int | None = opt(None, "Train the last N encoder blocks (overrides --freeze).")
    epochs: int = opt(30, "Passes over the training chips.")
    lr: float = opt(3e-3, "Head learning rate (encoder: lr/10).")
    seed: int = opt(0, "Seed of the split, shuffling and init.")
    val_split: float = opt(0.2, "Fraction of whole images (or tiles of a single image) held out.")
    resume: bool = opt(
        True, "Continue from OUT/checkpoint.pt when it exists.", flag="--resume/--no-resume"
    )
    head_type: str = opt("linear", "linear or mlp (chip tasks).")
    pooling: str = opt("mean+std", "Chip vector: cls, mean, mean+std or cls+mean.")
    class_weights: str | None = opt(
        None, "'balanced' (inverse frequency) or comma-separated weights."
    )
    pairs: Path | None = opt(None, "CSV with columns image,mask (paths relative to the CSV).")
    images: Path | None = opt(None, "Folder of images.")
    masks: Path | None = opt(
        None, "Folder of masks/target rasters matched to --images by file stem."
    )
    max_time: float | None = opt(
        None, "Stop after this many seconds (the best epoch so far is kept)."
    )


OutOpt = Annotated[Path, FinetuneOptions.option_info("out")]
FreezeOpt = Annotated[bool, FinetuneOptions.option_info("freeze")]
UnfreezeOpt = Annotated[int | None, FinetuneOptions.option_info("unfreeze_last")]
EpochsOpt = Annotated[int, FinetuneOptions.option_info("epochs")]
LrOpt = Annotated[float, FinetuneOptions.option_info("lr")]
SeedOpt = Annotated[int, FinetuneOptions.option_info("seed")]
ValOpt = Annotated[float, FinetuneOptions.option_info("val_split")]
ResumeOpt = Annotated[bool, FinetuneOptions.option_info("resume")]
HeadKindOpt = Annotated[str, FinetuneOptions.option_info("head_type")]
PoolingOpt = Annotated[str, FinetuneOptions.option_info("pooling")]
ClassWeightsOpt = Annotated[str | None, FinetuneOptions.option_info("class_weights")]
PairsOpt = Annotated[Path | None, FinetuneOptions.option_info("pairs")]
ImagesOpt = Annotated[Path | None, FinetuneOptions.option_info("images")]
MasksOpt = Annotated[Path | None, FinetuneOptions.option_info("masks")]
MaxTimeOpt = Annotated[float | None, FinetuneOptions.option_info("max_time")]


def register(app: typer.Typer) -> None:
    """Add the command group to ``app``."""
    app.add_typer(finetune_app, name="finetune")


def _freeze(freeze: bool, unfreeze_last: int | None) -> str | int:
    if unfreeze_last is not None:
        return unfreeze_last
    return "all" if freeze else "none"


def _weights_list(value: str | None):
    if value is None or value == "balanced":
        return value
    try:
        return [float(v) for v in split_list(value) or []]
    except ValueError:
        from clay_search.errors import TrainingDataError

        raise TrainingDataError(
            f"--class-weights {value!r}: give 'balanced' or numbers, e.g. 1,2.5,1"
        ) from None


def _report(run, quiet: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    t = Table(title=f"finetune {run.spec.task} -> {run.head}", show_header=False)
    t.add_row("chips", f"{run.train_chips} train / {run.val_chips} held out (whole images)")
    t.add_row("best epoch", str(run.result.best_epoch))
    for k, v in run.metrics.items():
        if isinstance(v, float):
            t.add_row(k, f"{v:.4f}")
    t.add_row("time", f"{run.result.seconds:.1f} s")
    console.print(t)


def _common(
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
) -> dict:
    return {
        "weights": weights,
        "freeze": _freeze(freeze, unfreeze_last),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "val_fraction": val_split,
        "resume": resume,
        "device": resolve_device(device),
        "progress": not quiet,
        "max_time_s": max_time,
    }


@finetune_app.command("classify")
@handle_errors
def classify(
    data: Annotated[Path, typer.Argument(help="Class folders: DATA/<Class>/*.tif|png|jpg")],
    out: OutOpt,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Multi-label CSV (source,labels; labels joined with ';')."),
    ] = None,
    sensor: ImageSensorOpt = None,
    bands: BandsOpt = None,
    chip_size: ChipSizeOpt = 64,
    weights: WeightsOpt = None,
    freeze: FreezeOpt = True,
    unfreeze_last: UnfreezeOpt = None,
    head_type: HeadKindOpt = "linear",
    pooling: PoolingOpt = "mean+std",
    class_weights: ClassWeightsOpt = None,
    epochs: EpochsOpt = 30,
    batch_size: BatchSizeOpt = 32,
    lr: LrOpt = 3e-3,
    seed: SeedOpt = 0,
    val_split: ValOpt = 0.2,
    resume: ResumeOpt = True,
    device: DeviceOpt = "auto",
    max_time: MaxTimeOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train a chip classifier (class = subfolder; multi-label from --labels)."""
    from clay_search.tasks import finetune_classify

    run = finetune_classify(
        data,
        out,
        labels_csv=labels,
        chip_size=chip_size,
        sensor=sensor,
        bands=split_list(bands),
        head=head_type,
        pooling=pooling,
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


@finetune_app.command("regress")
@handle_errors
def regress(
    out: OutOpt,
    targets: Annotated[
        Path | None,
        typer.Option(
            "--targets",
            help="CSV/Parquet/GeoParquet of chip 'source' + a value column (per-chip regression).",
        ),
    ] = None,
    target_column: Annotated[
        str, typer.Option("--target-column", help="Value column of --targets.")
    ] = "value",
    pairs: PairsOpt = None,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    sensor: ImageSensorOpt = None,
    bands: BandsOpt = None,
    chip_size: ChipSizeOpt = 64,
    stride: StrideOpt = None,
    weights: WeightsOpt = None,
    freeze: FreezeOpt = True,
    unfreeze_last: UnfreezeOpt = None,
    head_type: HeadKindOpt = "linear",
    pooling: PoolingOpt = "mean+std",
    epochs: EpochsOpt = 30,
    batch_size: BatchSizeOpt = 32,
    lr: LrOpt = 3e-3,
    seed: SeedOpt = 0,
    val_split: ValOpt = 0.2,
    resume: ResumeOpt = True,
    device: DeviceOpt = "auto",
    max_time: MaxTimeOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Regression: one value per chip (--targets) or per pixel (target rasters aligned with
    the images: --pairs, or --images with --masks)."""
    from clay_search.tasks import finetune_regress

    run = finetune_regress(
        out,
        targets=targets,
        target_column=target_column,
        pairs=pairs,
        images=images,
        target_rasters=masks,
        chip_size=chip_size,
        stride=stride,
        sensor=sensor,
        bands=split_list(bands),
        head=head_type,
        pooling=pooling,
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


@finetune_app.command("segment")
@handle_errors
def segment(
    out: OutOpt,
    pairs: PairsOpt = None,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    sensor: ImageSensorOpt = None,
    bands: BandsOpt = None,
    chip_size: ChipSizeOpt = 64,
    stride: StrideOpt = None,
    ignore_index: Annotated[
        int | None,
        typer.Option(
            "--ignore-index", help="Mask value that is not a class (not trained, not scored)."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes", help="The class values, comma-separated (default: those in the masks)."
        ),
    ] = None,
    class_weights: ClassWeightsOpt = None,
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
    """Semantic segmentation from image/mask pairs (class-index masks of the image's size)."""
    from clay_search.errors import TrainingDataError
    from clay_search.tasks import finetune_segment

    try:
        class_values = [int(c) for c in split_list(classes) or []] if classes else None
    except ValueError:
        raise TrainingDataError(f"--classes {classes!r}: give integers, e.g. 0,1,2") from None
    run = finetune_segment(
        out,
        pairs=pairs,
        images=images,
        masks=masks,
        chip_size=chip_size,
        stride=stride,
        sensor=sensor,
        bands=split_list(bands),
        ignore_index=ignore_index,
        classes=class_values,
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
