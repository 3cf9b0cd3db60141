"""``clay-search finetune classify|regress|segment|change``: train a task head on labelled imagery.

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
    option_group,
    resolve_device,
    split_list,
)
from clay_search.ingest.params import IngestParams
from clay_search.optionset import OptionSet, opt

finetune_app = typer.Typer(
    help="Fine-tune the encoder with a task head (classify, regress, segment, change).",
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
    lora: int | None = opt(
        None,
        "Train rank-RANK LoRA adapters on every block's attention qkv/proj (encoder frozen; "
        "the head folder stores the adapters only).",
        metavar="RANK",
    )
    lora_alpha: float | None = opt(
        None, "LoRA scale: updates are scaled by alpha/rank (default alpha: rank)."
    )
    epochs: int = opt(30, "Passes over the training chips.")
    lr: float = opt(3e-3, "Head learning rate (trained encoder blocks: lr/10; LoRA adapters: lr).")
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
LoraOpt = Annotated[int | None, FinetuneOptions.option_info("lora")]
LoraAlphaOpt = Annotated[float | None, FinetuneOptions.option_info("lora_alpha")]
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
#: ingest's --stats (defined once, in IngestParams): the chips are planned and normalised as
#: `clay-search ingest --stats S` with the same weights would, so the head fits such a store
StatsOpt = Annotated[str, IngestParams.option_info("stats")]


def register(app: typer.Typer) -> None:
    """Add the command group to ``app`` (``change`` lives in ``cli/finetune_change.py``)."""
    from clay_search.cli.finetune_change import change

    if not any(c.name == "change" for c in finetune_app.registered_commands):
        finetune_app.command("change")(change)
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


@dataclass
class TrainOptions:
    """The training options every ``finetune`` command takes (added by :func:`train_options`)."""

    weights: Path | None
    freeze: bool
    unfreeze_last: int | None
    lora: int | None
    lora_alpha: float | None
    epochs: int
    batch_size: int
    lr: float
    seed: int
    val_split: float
    resume: bool
    device: str
    max_time: float | None
    stats: str
    quiet: bool
    verbose: bool

    def run_kwargs(self) -> dict:
        """Keywords of :func:`clay_search.tasks.run_task`."""
        return {
            "weights": self.weights,
            "freeze": _freeze(self.freeze, self.unfreeze_last),
            "lora": self.lora,
            "lora_alpha": self.lora_alpha,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "val_fraction": self.val_split,
            "resume": self.resume,
            "device": resolve_device(self.device),
            "progress": not self.quiet,
            "max_time_s": self.max_time,
            "stats": self.stats,
        }


#: (name, annotation, default) of the training options, in --help order
_TRAIN_OPTIONS: tuple[tuple[str, object, object], ...] = (
    ("weights", WeightsOpt, None),
    ("freeze", FreezeOpt, True),
    ("unfreeze_last", UnfreezeOpt, None),
    ("lora", LoraOpt, None),
    ("lora_alpha", LoraAlphaOpt, None),
    ("epochs", EpochsOpt, 30),
    ("batch_size", BatchSizeOpt, 32),
    ("lr", LrOpt, 3e-3),
    ("seed", SeedOpt, 0),
    ("val_split", ValOpt, 0.2),
    ("resume", ResumeOpt, True),
    ("device", DeviceOpt, "auto"),
    ("max_time", MaxTimeOpt, None),
    ("stats", StatsOpt, "auto"),
    ("quiet", QuietOpt, False),
    ("verbose", VerboseOpt, False),
)


@dataclass(frozen=True)
class ChipOptions:
    """How a ``finetune`` command cuts its images into chips (added by :func:`chip_options`)."""

    sensor: str | None = None
    bands: str | None = None
    chip_size: int = 64
    stride: int | None = None

    def reading(self) -> dict:
        """Keywords of the ``finetune_*`` functions (``stride`` only where it was given a
        value: the commands without ``--stride`` have none)."""
        kw = {"chip_size": self.chip_size, "sensor": self.sensor, "bands": split_list(self.bands)}
        return kw if self.stride is None else {**kw, "stride": self.stride}


#: the default of a command's ``chips: ChipOptions`` parameter (typer fills it in)
DEFAULT_CHIPS = ChipOptions()

#: (name, annotation, default) of the chip options, in --help order
_CHIP_OPTIONS: tuple[tuple[str, object, object], ...] = (
    ("sensor", ImageSensorOpt, None),
    ("bands", BandsOpt, None),
    ("chip_size", ChipSizeOpt, 64),
    ("stride", StrideOpt, None),
)


def chip_options(*, stride: bool = True):
    """Give a command ``--sensor``, ``--bands``, ``--chip-size`` and (``stride``) ``--stride``
    in place of its parameter ``chips: ChipOptions = DEFAULT_CHIPS``."""
    options = _CHIP_OPTIONS if stride else _CHIP_OPTIONS[:-1]
    return option_group("chips", options, ChipOptions)


def train_options(**defaults):
    """Give a command the training options (defined once, above), with per-command
    ``defaults`` (e.g. ``epochs=20``); the command receives them as ``train: TrainOptions``."""
    return option_group("train", _TRAIN_OPTIONS, TrainOptions, **defaults)


@finetune_app.command("classify")
@handle_errors
@train_options()
@chip_options(stride=False)
def classify(
    data: Annotated[Path, typer.Argument(help="Class folders: DATA/<Class>/*.tif|png|jpg")],
    out: OutOpt,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Multi-label CSV (source,labels; labels joined with ';')."),
    ] = None,
    chips: ChipOptions = DEFAULT_CHIPS,
    head_type: HeadKindOpt = "linear",
    pooling: PoolingOpt = "mean+std",
    class_weights: ClassWeightsOpt = None,
    *,
    train: TrainOptions,
) -> None:
    """Train a chip classifier (class = subfolder; multi-label from --labels)."""
    from clay_search.tasks import finetune_classify

    run = finetune_classify(
        data,
        out,
        labels_csv=labels,
        **chips.reading(),
        head=head_type,
        pooling=pooling,
        class_weights=_weights_list(class_weights),
        **train.run_kwargs(),
    )
    _report(run, train.quiet)


@finetune_app.command("regress")
@handle_errors
@train_options()
@chip_options()
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
    chips: ChipOptions = DEFAULT_CHIPS,
    head_type: HeadKindOpt = "linear",
    pooling: PoolingOpt = "mean+std",
    *,
    train: TrainOptions,
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
        **chips.reading(),
        head=head_type,
        pooling=pooling,
        **train.run_kwargs(),
    )
    _report(run, train.quiet)


@finetune_app.command("segment")
@handle_errors
@train_options(epochs=20, batch_size=16)
@chip_options()
def segment(
    out: OutOpt,
    pairs: PairsOpt = None,
    images: ImagesOpt = None,
    masks: MasksOpt = None,
    chips: ChipOptions = DEFAULT_CHIPS,
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
    *,
    train: TrainOptions,
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
        **chips.reading(),
        ignore_index=ignore_index,
        classes=class_values,
        class_weights=_weights_list(class_weights),
        **train.run_kwargs(),
    )
    _report(run, train.quiet)
