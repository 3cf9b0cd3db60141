"""Fine-tuning a task model (:class:`~clay_search.model.heads.ChipModel` or ``DenseModel``)
on in-memory chips: AdamW, warm-up + cosine, resumable per-epoch checkpoints, a metrics CSV.

When the backbone is fully frozen the encoder runs once per chip and its features (pooled
vectors, or the 4 tapped grids) are cached, so every epoch trains only the head; augmentation
(flips, 90 degree turns) applies when any encoder block trains. Reading imagery is the job of
``clay_search.ingest.taskdata``; this module only writes into its output folder.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clay_search.errors import CheckpointError
from clay_search.model.backbone import Metadata
from clay_search.model.heads import ChipModel, DenseModel
from clay_search.model.metrics import (
    MAIN_METRIC,
    classification_metrics,
    confusion,
    multilabel_metrics,
    regression_metrics,
    segmentation_metrics,
)
from clay_search.model.train import lr_at

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
CACHE_BYTES = 2 * 2**30  # frozen-feature cache limit; above it features are computed per batch


@dataclass
class ArrayData:
    """Normalised chips ``x`` ``[N, C, S, S]`` float32 and targets ``y`` (see TaskChips)."""

    x: np.ndarray
    y: np.ndarray
    time: np.ndarray
    latlon: np.ndarray
    waves: list[float]
    gsd: float

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class FinetuneConfig:
    """Training settings. ``encoder_lr`` defaults to ``lr / 10`` for trained encoder blocks."""

    task: str
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float | None = None
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    seed: int = 0
    class_weights: list[float] | None = None
    augment: bool = True
    max_time_s: float | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    classes: list[str] | None = None
    keep: str = "best"  # "best": the epoch with the best held-out main metric; "last"

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


@dataclass
class FinetuneResult:
    """What training did: per-epoch rows, the best epoch and its held-out metrics."""

    rows: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float | None = None
    stopped_early: bool = False


def _meta(data: ArrayData, idx: np.ndarray, device) -> Metadata:
    return Metadata(
        waves=torch.tensor(data.waves, dtype=torch.float32, device=device),
        gsd=float(data.gsd),
        time=torch.from_numpy(data.time[idx]).to(device),
        latlon=torch.from_numpy(data.latlon[idx]).to(device),
    )


def _augment(x: torch.Tensor, y: torch.Tensor, dense: bool, gen: torch.Generator):
    k = int(torch.randint(0, 4, (1,), generator=gen))
    flip = bool(torch.randint(0, 2, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    if flip:
        x = x.flip(-1)
    if dense:
        y = torch.rot90(y, k, dims=(-2, -1))
        if flip:
            y = y.flip(-1)
    return x, y


def _loss(
    task: str, out: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, cfg: FinetuneConfig
) -> torch.Tensor:
    if task == "classify":
        return F.cross_entropy(out, y, weight=weights)
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(out, y)
    if task == "segment":
        return F.cross_entropy(out, y, weight=weights, ignore_index=-1)
    t = (y - cfg.target_mean) / cfg.target_std
    pred = out.squeeze(1) if out.ndim > 1 else out
    keep = torch.isfinite(t)
    if not keep.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred[keep], t[keep], beta=1.0)


def predict_batches(
    model,
    data: ArrayData,
    *,
    batch_size: int = 64,
    device="cpu",
    features: torch.Tensor | None = None,
) -> np.ndarray:
    """Raw model outputs for every chip (logits, or standardised values) as float32 numpy."""
    model.eval()
    outs = []
    size = tuple(data.x.shape[-2:])
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            idx = np.arange(s, min(s + batch_size, len(data)))
            if features is not None:
                o = model.decode(features[idx].to(device), size)
            else:
                o = model(torch.from_numpy(data.x[idx]).to(device), _meta(data, idx, device))
            outs.append(o.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def evaluate(task: str, outputs: np.ndarray, y: np.ndarray, cfg: FinetuneConfig) -> dict:
    """Held-out metrics of raw outputs against targets."""
    if task == "classify":
        k = outputs.shape[1]
        return classification_metrics(outputs.argmax(1), y, k, cfg.classes)
    if task == "multilabel":
        return multilabel_metrics(1 / (1 + np.exp(-outputs)), y, classes=cfg.classes)
    if task == "segment":
        k = outputs.shape[1]
        return segmentation_metrics(confusion(outputs.argmax(1), y, k), cfg.classes)
    pred = outputs.squeeze(1) if outputs.ndim > 1 and outputs.shape[1] == 1 else outputs
    return regression_metrics(pred * cfg.target_std + cfg.target_mean, y)


def _better(task: str, new: float, old: float | None) -> bool:
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return True
    return new < old if MAIN_METRIC[task] == "rmse" else new > old


def _rss_mb() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # noqa: BLE001 - not on every platform
        return None


@contextmanager
def seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the block on torch's global RNG seeded with ``seed``, then give the caller back the
    RNG state it had (CPU, and ``device``'s when it is a GPU). Initialisation (``nn.Module``
    constructors) and dropout draw from the global RNG: under this, a run's weights follow from
    its seed alone, not from whatever ran before it in the process."""
    dev = torch.device(device)
    devices = []
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def finetune(
    model: ChipModel | DenseModel,
    train: ArrayData,
    val: ArrayData | None,
    cfg: FinetuneConfig,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    resume: bool = True,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> FinetuneResult:
    """Train ``model`` for ``cfg.epochs`` epochs; the best epoch's weights (by the held-out main
    metric, or the last epoch without a held-out set) are loaded back into ``model``.

    ``out_dir`` receives ``checkpoint.pt`` (after every epoch, tensors and plain values only;
    a rerun resumes from it) and ``metrics.csv`` (one row per epoch).
    """
    with seeded(cfg.seed, device):  # initialisation and dropout follow from the seed
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        dev = torch.device(device)
        model.to(dev)
        dense = isinstance(model, DenseModel)
        bb = model.backbone
        frozen = bb.fully_frozen
        head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        enc_params = [p for p in bb.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [{"params": head_params, "lr": cfg.lr, "base": cfg.lr}]
        if enc_params:
            elr = cfg.encoder_lr or cfg.lr / 10
            groups.append({"params": enc_params, "lr": elr, "base": elr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        weights = (
            torch.tensor(cfg.class_weights, dtype=torch.float32, device=dev)
            if cfg.class_weights
            else None
        )
        n = len(train)
        steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
        total = steps_per_epoch * cfg.epochs
        warmup = max(1, int(cfg.warmup_fraction * total))
        gen = torch.Generator().manual_seed(cfg.seed)
        size = tuple(train.x.shape[-2:])

        # frozen encoder: run it once per chip
        feats_train = feats_val = None
        if frozen:
            per_chip = (
                4 * bb.dim * (size[0] // bb.patch_size) * (size[1] // bb.patch_size)
                if dense
                else 2 * bb.dim
            ) * 4
            if per_chip * (n + (len(val) if val else 0)) <= CACHE_BYTES:
                feats_train = _features(model, train, dev)
                feats_val = _features(model, val, dev) if val is not None and len(val) else None

        result = FinetuneResult()
        ck_path = out / CHECKPOINT
        epoch, elapsed_before, best_state, best_score = 0, 0.0, None, None
        if resume and ck_path.exists():
            try:
                ck = torch.load(str(ck_path), map_location="cpu", weights_only=True)
                _load_trainable(model, ck["model"])
                opt.load_state_dict(ck["optimizer"])
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: say so
                raise CheckpointError(
                    f"cannot resume from {ck_path} ({type(e).__name__}: {str(e)[:200]}); it comes "
                    "from another model or settings: delete it (or use --no-resume) to start over"
                ) from None
            gen.set_state(ck["generator"])
            epoch, elapsed_before = int(ck["epoch"]), float(ck["elapsed_s"])
            result.rows = json.loads(ck["rows"])
            best_state, best_score = ck.get("best_state"), ck.get("best_score")
            result.best_epoch = ck.get("best_epoch")
            if result.best_epoch is not None:
                result.best_metrics = json.loads(ck.get("best_metrics", "{}"))
        t0 = time.monotonic()
        columns = TextColumn("{task.fields[info]}")
        with Progress(
            TextColumn(f"[bold]finetune {cfg.task}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            columns,
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not progress,
            transient=False,
        ) as bar:
            task_id = bar.add_task(
                "train", total=total, completed=epoch * steps_per_epoch, epoch=epoch, info=""
            )
            while epoch < cfg.epochs:
                if (
                    cfg.max_time_s is not None
                    and elapsed_before + time.monotonic() - t0 > cfg.max_time_s
                ):
                    result.stopped_early = True
                    break
                model.train()
                perm = torch.randperm(n, generator=gen).numpy()
                losses = []
                te = time.monotonic()
                for s in range(steps_per_epoch):
                    idx = np.sort(perm[s * cfg.batch_size : (s + 1) * cfg.batch_size])
                    if not len(idx):
                        continue
                    step = epoch * steps_per_epoch + s
                    f = lr_at(step, base_lr=1.0, warmup=warmup, total=total)
                    for g in opt.param_groups:
                        g["lr"] = g["base"] * f
                    y = torch.from_numpy(train.y[idx]).to(dev)
                    if feats_train is not None:
                        o = model.decode(feats_train[idx].to(dev), size)
                    else:
                        x = torch.from_numpy(train.x[idx]).to(dev)
                        if cfg.augment:
                            x, y = _augment(x, y, dense, gen)
                        o = model(x, _meta(train, idx, dev))
                    loss = _loss(cfg.task, o, y, weights, cfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                    opt.step()
                    losses.append(float(loss.detach()))
                    bar.update(
                        task_id, advance=1, epoch=epoch + 1, info=f"loss {np.mean(losses):.4f}"
                    )
                epoch += 1
                row = {
                    "epoch": epoch,
                    "train_loss": float(np.mean(losses)) if losses else None,
                    "epoch_seconds": round(time.monotonic() - te, 2),
                }
                metrics = {}
                if val is not None and len(val):
                    outv = predict_batches(
                        model, val, batch_size=cfg.batch_size, device=dev, features=feats_val
                    )
                    metrics = evaluate(cfg.task, outv, val.y, cfg)
                    row.update(
                        {f"val_{k}": v for k, v in metrics.items() if isinstance(v, float | int)}
                    )
                score = metrics.get(MAIN_METRIC[cfg.task]) if metrics else None
                if cfg.keep == "last" or score is None or _better(cfg.task, score, best_score):
                    best_score = score
                    best_state = _trainable_state(model)
                    result.best_epoch = epoch
                    result.best_metrics = metrics
                result.rows.append(row)
                _write_metrics(out / METRICS_CSV, result.rows)
                bar.update(
                    task_id,
                    info=" ".join(
                        f"{k.removeprefix('val_')} {v:.3f}"
                        for k, v in row.items()
                        if k.startswith("val_")
                        and isinstance(v, float)
                        and k.removeprefix("val_")
                        in ("overall_accuracy", "miou", "rmse", "r2", "f1_micro")
                    ),
                )
                state = {
                    "model": _trainable_state(model),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "epoch": epoch,
                    "elapsed_s": elapsed_before + (time.monotonic() - t0),
                    "rows": json.dumps(result.rows),
                    "best_state": best_state,
                    "best_score": best_score,
                    "best_epoch": result.best_epoch,
                    "best_metrics": json.dumps(result.best_metrics),
                }
                tmp = ck_path.with_suffix(".tmp")
                torch.save(state, str(tmp))
                tmp.replace(ck_path)
                if on_epoch is not None:
                    on_epoch(row)
        if best_state is not None:
            _load_trainable(model, best_state)
        model.eval()
        result.seconds = elapsed_before + (time.monotonic() - t0)
        result.peak_rss_mb = _rss_mb()
        return result


def _features(model, data: ArrayData, dev) -> torch.Tensor:
    model.eval()
    chunks = []
    with torch.inference_mode():
        for s in range(0, len(data), 64):
            idx = np.arange(s, min(s + 64, len(data)))
            chunks.append(
                model.features(torch.from_numpy(data.x[idx]).to(dev), _meta(data, idx, dev)).cpu()
            )
    return torch.cat(chunks).clone()


def _trainable_state(model) -> dict[str, torch.Tensor]:
    """Tensors of the head and of any trained encoder parameter (copies)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.") or k in trainable
    }


def _load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    bad = [k for k in state if k not in own or own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint tensors do not fit the model: {bad[:5]}")
    model.load_state_dict(state, strict=False)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
