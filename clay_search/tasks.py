"""Fine-tuning tasks end to end: read labelled data, train a head, write the head folder.

``finetune_classify``, ``finetune_regress`` and ``finetune_segment`` are what
``clay-search finetune classify|regress|segment`` runs; each returns a :class:`TaskRun` (the head
folder, the training result and the held-out metrics). Data are read by
:mod:`clay_search.ingest.taskdata`; training is :func:`clay_search.model.finetune.finetune`; the
head folder format is :mod:`clay_search.model.headfile`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clay_search.errors import TrainingDataError
from clay_search.ingest.taskdata import (
    TaskChips,
    match_by_stem,
    read_labelled_folder,
    read_pairs,
    read_pairs_csv,
    read_target_table,
    split_holdout,
)
from clay_search.model.backbone import ClayBackbone
from clay_search.model.checkpoints import WeightsInfo
from clay_search.model.clay import ClayEncoder, get_config
from clay_search.model.finetune import (
    ArrayData,
    FinetuneConfig,
    FinetuneResult,
    finetune,
    seeded,
)
from clay_search.model.headfile import HeadSpec, build_model, save_head
from clay_search.model.lora import LoRAConfig, count_parameters
from clay_search.model.normalise import NormalisationRecord


@dataclass
class TaskRun:
    """A finished fine-tuning run."""

    head: Path
    result: FinetuneResult
    spec: HeadSpec
    train_chips: int
    val_chips: int

    @property
    def metrics(self) -> dict:
        """Held-out metrics of the best epoch."""
        return self.result.best_metrics


def _lora_config(lora: LoRAConfig | int | None, alpha: float | None) -> LoRAConfig | None:
    if lora is None or isinstance(lora, LoRAConfig):
        return lora
    try:
        return LoRAConfig(rank=int(lora), alpha=alpha)
    except ValueError as e:
        raise TrainingDataError(f"--lora {lora!r}: {e}") from None


def _backbone(
    weights, freeze, scratch: str | None, lora: LoRAConfig | None = None, seed: int = 0
) -> ClayBackbone:
    """The backbone, initialised from ``seed`` (a scratch encoder's weights, LoRA adapters)."""
    if scratch and lora is not None:
        raise TrainingDataError("LoRA adapts pretrained weights; it cannot train from scratch")
    if not scratch and lora is not None and freeze not in ("all", 0):
        raise TrainingDataError(
            "--lora trains adapters on a frozen encoder: drop --unfreeze-last/--no-freeze, "
            "or drop --lora"
        )
    with seeded(seed):
        if scratch:
            cfg = get_config(scratch)
            info = WeightsInfo(f"scratch-{scratch}", cfg, "", "scratch")
            return ClayBackbone(ClayEncoder.from_config(cfg), info, freeze="none")
        return ClayBackbone.from_weights(weights, freeze=freeze, lora=lora)


def backbone_record(bb: ClayBackbone) -> NormalisationRecord | None:
    """The normalisation record of the weights under ``bb`` (None: none, or from scratch)."""
    if bb.info is None or bb.info.format == "scratch":
        return None
    return NormalisationRecord.from_config({"normalisation": bb.info.normalisation})


def chip_reading(
    bb: ClayBackbone,
    *,
    chip_size: int,
    sensor: str | None,
    bands: list[str] | None,
    stats: str,
) -> dict[str, Any]:
    """The keywords every task reader (:mod:`clay_search.ingest.taskdata`) is given: chips of
    ``chip_size`` px from ``sensor``'s ``bands``, planned and normalised as ``clay-search ingest
    --stats STATS`` with ``bb``'s weights would (their normalisation record)."""
    return dict(
        chip_size=chip_size, sensor=sensor, bands=bands, record=backbone_record(bb), stats=stats
    )


def task_backbone(
    weights=None,
    freeze: str | int = "all",
    scratch: str | None = None,
    lora: LoRAConfig | int | None = None,
    lora_alpha: float | None = None,
    seed: int = 0,
    **_ignored,
) -> ClayBackbone:
    """The backbone a task trains on (the keywords of :func:`run_task`; others ignored).

    Built before the data are read, so the chips are planned with its weights' normalisation
    record (:func:`backbone_record`), as ingest with those weights plans them. Whatever it
    initialises at random (a scratch encoder, LoRA adapters) follows from ``seed``."""
    return _backbone(weights, freeze, scratch, _lora_config(lora, lora_alpha), seed)


def _check_planned_with(chips: TaskChips, bb: ClayBackbone) -> None:
    """Refuse chips planned with another weights' record than ``bb``'s (API misuse: the head
    would train on other bands or statistics than ingest with these weights gives). A model
    trained from scratch has no record to match: any planning is its own."""
    if bb.info is not None and bb.info.format == "scratch":
        return
    record = backbone_record(bb)
    want = record.digest() if record is not None else None
    have = (chips.normalisation or {}).get("record")
    if chips.normalisation.get("stats", "auto") == "auto" and have != want:
        raise TrainingDataError(
            f"the chips were planned with normalisation record {have} but the weights "
            f"{bb.model_id} carry {want}; read them with record=backbone_record(backbone) "
            "(clay_search.tasks), so the head trains on what ingest with these weights gives"
        )


def _arrays(chips: TaskChips, idx: np.ndarray) -> ArrayData:
    return ArrayData(
        chips.normalised(idx),
        chips.targets[idx],
        chips.time[idx],
        chips.latlon[idx],
        chips.waves,
        chips.gsd,
    )


def _balanced(y: np.ndarray, k: int) -> list[float]:
    counts = np.bincount(y[y >= 0].ravel(), minlength=k).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / k, 0.0)
    return (w / w[w > 0].mean()).tolist()


def run_task(
    chips: TaskChips,
    task: str,
    out: str | Path,
    *,
    kind: str,
    weights=None,
    freeze: str | int = "all",
    scratch: str | None = None,
    pooling: str = "mean+std",
    head: str = "linear",
    channels: int = 64,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    val_fraction: float = 0.2,
    label_fraction: float = 1.0,
    class_weights: str | list[float] | None = None,
    ignore_index: int | None = None,
    device: str = "cpu",
    resume: bool = True,
    progress: bool = False,
    max_time_s: float | None = None,
    augment: bool = True,
    chip_size: int = 64,
    keep: str = "best",
    model_options: dict | None = None,
    lora: LoRAConfig | int | None = None,
    lora_alpha: float | None = None,
    backbone: ClayBackbone | None = None,
) -> TaskRun:
    """Split ``chips`` (whole images/tiles held out), train, save the head folder ``out``.

    ``keep``: ``best`` (the epoch with the best held-out main metric) or ``last``.
    ``model_options``: extra ``head.json`` ``model`` fields (e.g. a change head's ``fusion``).
    A ``change`` task (:mod:`clay_search.change_task`) trains as a two-class segmentation.
    ``lora``: a rank (or a :class:`~clay_search.model.lora.LoRAConfig`): adapters on the
    frozen encoder's attention projections train with the head, at the head's learning rate.
    ``backbone``: the one :func:`task_backbone` built (the chips were planned with its
    weights' record); default: built here from ``weights``/``freeze``/``scratch``/``lora``.
    ``seed`` seeds the split, the label subset, every initialisation and the training; the
    caller's global torch RNG is left as it was.
    The chips' normalisation decision (policy, record, statistics) is kept in ``head.json``.
    """
    lora_cfg = _lora_config(lora, lora_alpha)
    train_idx, val_idx = split_holdout(chips, val_fraction, seed=seed)
    if label_fraction < 1.0:
        rng = np.random.default_rng(seed)
        n_keep = max(1, int(round(label_fraction * len(train_idx))))
        train_idx = np.sort(rng.choice(train_idx, n_keep, replace=False))
    if not len(train_idx):
        raise TrainingDataError("no training chips left after the held-out split")
    classes = chips.classes
    if task == "classify" and len(np.unique(chips.targets[train_idx])) < 2:
        raise TrainingDataError("the training split holds one class only; add more chips")
    num_outputs = len(classes) if task in ("classify", "multilabel", "segment", "change") else 1
    bb = backbone if backbone is not None else _backbone(weights, freeze, scratch, lora_cfg, seed)
    _check_planned_with(chips, bb)
    train, val = _arrays(chips, train_idx), _arrays(chips, val_idx) if len(val_idx) else None
    cw = None
    if class_weights == "balanced" and task in ("classify", "segment", "change"):
        cw = _balanced(train.y, num_outputs)
    elif isinstance(class_weights, list | tuple):
        if len(class_weights) != num_outputs:
            raise TrainingDataError(
                f"{len(class_weights)} class weights given for {num_outputs} classes"
            )
        cw = [float(w) for w in class_weights]
    tmean = tstd = None
    if task in ("regress", "regress-pixel"):
        finite = train.y[np.isfinite(train.y)]
        if not len(finite):
            raise TrainingDataError("no finite regression targets in the training split")
        tmean, tstd = float(finite.mean()), float(finite.std() or 1.0)
    cfg = FinetuneConfig(
        task="segment" if task == "change" else task,  # same loss and metrics
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        encoder_lr=lr if lora_cfg is not None else None,
        seed=seed,
        class_weights=cw,
        augment=augment,
        max_time_s=max_time_s,
        target_mean=tmean or 0.0,
        target_std=tstd or 1.0,
        classes=classes,
        keep=keep,
    )
    spec = HeadSpec(
        task=task,
        sensor=chips.sensor,
        bands=list(chips.bands),
        waves=list(chips.waves),
        normaliser=chips.normaliser.to_dict(),
        normalisation={**chips.normalisation, "notes": list(chips.normaliser.notes)},
        chip_size=int(chip_size),
        model={
            "kind": kind,
            "num_outputs": num_outputs,
            "pooling": pooling,
            "head": head,
            "channels": channels,
            **(model_options or {}),
        },
        backbone={},
        classes=classes,
        ignore_index=ignore_index,
        gsd=chips.gsd,
        target={"mean": tmean, "std": tstd} if tmean is not None else None,
    )
    with seeded(seed):  # the head's initial weights follow from the seed alone
        model = build_model(spec, bb)
    out = Path(out)
    result = finetune(model, train, val, cfg, out, device=device, resume=resume, progress=progress)
    spec.metrics = result.best_metrics
    spec.training = {
        **{k: v for k, v in cfg.to_dict().items() if k != "classes"},
        "freeze": bb.freeze,
        "scratch": scratch,
        "lora": lora_cfg.to_dict() if lora_cfg is not None else None,
        "parameters": count_parameters(model),
        "train_chips": int(len(train_idx)),
        "val_chips": int(len(val_idx)),
        "val_fraction": val_fraction,
        "label_fraction": label_fraction,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 2),
        "split": "whole images/tiles (seeded)",
        "held_out_groups": sorted({chips.groups[i] for i in val_idx})[:200],
    }
    save_head(model, spec, out)
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "best_epoch": result.best_epoch,
                "held_out": result.best_metrics,
                "epochs": result.rows,
            },
            indent=2,
            default=float,
        )
        + "\n"
    )
    return TaskRun(out, result, spec, int(len(train_idx)), int(len(val_idx)))


def finetune_classify(
    data: str | Path,
    out: str | Path,
    *,
    labels_csv: str | Path | None = None,
    chip_size: int = 64,
    sensor: str | None = None,
    bands: list[str] | None = None,
    stats: str = "auto",
    **kw,
) -> TaskRun:
    """Train a chip classifier on ``DATA/<Class>/*`` (or a multi-label ``labels_csv``).

    The chips are planned and normalised as ``clay-search ingest --stats STATS`` with the same
    weights would (``stats``, default ``auto``): the head applies to such a store's vectors."""
    bb = task_backbone(**kw)
    reading = chip_reading(bb, chip_size=chip_size, sensor=sensor, bands=bands, stats=stats)
    chips = read_labelled_folder(data, labels_csv=labels_csv, **reading)
    task = "multilabel" if chips.targets.ndim == 2 else "classify"
    return run_task(chips, task, out, kind="chip", chip_size=chip_size, backbone=bb, **kw)


def finetune_regress(
    out: str | Path,
    *,
    targets: str | Path | None = None,
    target_column: str = "value",
    pairs: str | Path | None = None,
    images: str | Path | None = None,
    target_rasters: str | Path | None = None,
    chip_size: int = 64,
    stride: int | None = None,
    sensor: str | None = None,
    bands: list[str] | None = None,
    stats: str = "auto",
    **kw,
) -> TaskRun:
    """Per-chip regression (``targets`` table) or pixel-wise regression (target rasters aligned
    with the images: ``pairs`` CSV ``image,mask`` or ``images`` + ``target_rasters`` folders).
    ``stats``: as :func:`finetune_classify`."""
    plist = _pairs(pairs, images, target_rasters) if targets is None else []
    bb = task_backbone(**kw)
    reading = chip_reading(bb, chip_size=chip_size, sensor=sensor, bands=bands, stats=stats)
    if targets is not None:
        chips = read_target_table(targets, column=target_column, **reading)
        return run_task(chips, "regress", out, kind="chip", chip_size=chip_size, backbone=bb, **kw)
    chips = read_pairs(plist, kind="value", stride=stride, **reading)
    return run_task(
        chips, "regress-pixel", out, kind="dense", chip_size=chip_size, backbone=bb, **kw
    )


def _pairs(pairs, images, masks) -> list[tuple[Path, Path]]:
    if pairs is not None:
        return read_pairs_csv(pairs)
    if images is not None and masks is not None:
        return match_by_stem(images, masks)
    raise TrainingDataError("give --pairs PAIRS.csv, or --images DIR with --masks DIR")


def finetune_segment(
    out: str | Path,
    *,
    pairs: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    chip_size: int = 64,
    stride: int | None = None,
    sensor: str | None = None,
    bands: list[str] | None = None,
    ignore_index: int | None = None,
    classes: list[int] | None = None,
    stats: str = "auto",
    **kw,
) -> TaskRun:
    """Semantic segmentation from image/mask pairs (class-index masks of the image's size).
    ``stats``: as :func:`finetune_classify`."""
    plist = _pairs(pairs, images, masks)
    bb = task_backbone(**kw)
    reading = chip_reading(bb, chip_size=chip_size, sensor=sensor, bands=bands, stats=stats)
    chips = read_pairs(
        plist, kind="class", stride=stride, ignore_index=ignore_index, classes=classes, **reading
    )
    return run_task(
        chips,
        "segment",
        out,
        kind="dense",
        chip_size=chip_size,
        ignore_index=ignore_index,
        backbone=bb,
        **kw,
    )
