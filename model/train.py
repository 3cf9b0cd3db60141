"""Pretraining the Clay MAE on in-memory chip sets.

Pieces (each usable on its own):

- :class:`ChipSet`: raw chips of one sensor + wavelengths, GSD, statistics, time, location
- :class:`BatchSampler`: one sensor per batch, seeded; flips, band dropping, metadata dropout
- :func:`lr_at`: linear warm-up then cosine decay
- :func:`train`: AdamW loop with resumable checkpoints, a loss CSV and a loss-curve PNG

Files are only written to the output folder (checkpoint, loss log, weights); reading imagery is
the job of ``clay_search.ingest.datasets``.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clay_search.errors import CheckpointError, CheckpointNotFoundError
from clay_search.model.checkpoints import WeightsInfo, load_encoder, save_weights
from clay_search.model.clay import ClayEncoder, ClayMAE, get_config
from clay_search.model.encoding import encode_latlon_one, encode_time_one
from clay_search.model.normalise import NormalisationRecord, Normaliser, SeriesStats


# -- data ----------------------------------------------------------------------------------------
@dataclass
class ChipSet:
    """Chips of one sensor held in memory. ``pixels`` raw ``[N, C, H, W]``."""

    name: str
    pixels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    waves: list[float]
    gsd: float
    band_names: list[str] = field(default_factory=list)
    labels: list | None = None
    names: list[str] | None = None
    times: list[datetime | None] | None = None
    lonlats: list[tuple[float, float] | None] | None = None
    rgb_indices: list[int] | None = None
    #: the sensor (``sensors.yaml`` name) the bands are of, and the pre-normalisation
    #: transform: what the weights' normalisation record says, for ingest to apply
    sensor: str | None = None
    transform: str | None = None

    def __len__(self) -> int:
        return len(self.pixels)

    def normaliser(self) -> Normaliser:
        """The set's :class:`~clay_search.model.normalise.Normaliser` (ingest applies the same
        one to a source the weights' record matches)."""
        return Normaliser(
            mean=np.asarray(self.mean, np.float64),
            std=np.asarray(self.std, np.float64),
            transform=self.transform,
            stats_source="source",
        )

    def normalised(self, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """``(x - mean) / std`` float32 chips (all, or ``idx``), as ingest normalises."""
        x = self.pixels if idx is None else self.pixels[idx]
        return self.normaliser()(x)

    def series_stats(self) -> SeriesStats | None:
        """This set's entry of the weights' normalisation record (None without a sensor)."""
        if self.sensor is None:
            return None
        from clay_search.model.sensors import SensorRegistry

        sensor = SensorRegistry.default().get(self.sensor)
        names = self.band_names or [b.name for b in sensor.bands[: len(self.mean)]]
        return SeriesStats(
            name=self.name,
            sensor=self.sensor,
            bands=tuple(sensor.band(n).name for n in names),
            mean=tuple(float(v) for v in self.mean),
            std=tuple(float(v) for v in self.std),
            transform=self.transform,
            dtype=str(self.pixels.dtype),
            stats_source="source",
        )

    def time_encoding(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """``[B, 4]`` time encoding of chips ``idx`` (zeros where unknown)."""
        t = self.times
        return np.array([encode_time_one(t[i] if t else None) for i in idx], np.float32)

    def latlon_encoding(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        """``[B, 4]`` location encoding of chips ``idx`` (zeros where unknown)."""
        ll = self.lonlats
        rows: list[tuple[float | None, float | None]] = []
        for i in idx:
            lonlat = ll[i] if ll else None
            rows.append(lonlat if lonlat is not None else (None, None))
        return np.array([encode_latlon_one(*r) for r in rows], np.float32)

    def stats_dict(self) -> dict:
        """Per-band statistics as JSON (recorded with the weights)."""
        names = self.band_names or [f"band{i}" for i in range(len(self.mean))]
        return {
            n: {"mean": float(m), "std": float(s), "wavelength": float(w)}
            for n, m, s, w in zip(names, self.mean, self.std, self.waves, strict=True)
        }


@dataclass
class Batch:
    """One training batch (all chips from one sensor)."""

    sensor: str
    pixels: torch.Tensor  # [B C H W] normalised, after band dropping
    target: torch.Tensor  # [B C H W] normalised, before band dropping
    time: torch.Tensor  # [B 4]
    latlon: torch.Tensor  # [B 4]
    waves: torch.Tensor  # [C]
    gsd: float
    rgb_indices: list[int] | None


@dataclass
class AugmentConfig:
    """Clay-style augmentation probabilities (per chip)."""

    flip: float = 0.5  # each of horizontal / vertical
    drop_all_bands: float = 0.1  # input all-zero (mean); reconstruct from metadata alone
    drop_half_bands: float = 0.2  # a random half of the bands zeroed
    zero_metadata: float = 0.2  # time and location both zeroed


class BatchSampler:
    """Seeded batches: a sensor drawn by ``weights``, then ``batch_size`` of its chips."""

    def __init__(
        self,
        sets: Sequence[ChipSet],
        *,
        batch_size: int,
        seed: int = 0,
        weights: Sequence[float] | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        if not sets:
            raise ValueError("no chip sets to train on")
        self.sets = list(sets)
        self.batch_size = batch_size
        self.augment = augment or AugmentConfig()
        w = np.asarray(weights if weights is not None else [1.0] * len(sets), np.float64)
        self.weights = w / w.sum()
        self.rng = np.random.default_rng(seed)

    def state(self) -> Mapping[str, Any]:
        """RNG state (for resuming)."""
        return self.rng.bit_generator.state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore the RNG state."""
        self.rng.bit_generator.state = state

    def augment_pixels(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flips (applied to input and target) and band dropping (input only)."""
        a, rng = self.augment, self.rng
        b, c = int(x.shape[0]), int(x.shape[1])
        hflip = rng.random(b) < a.flip
        vflip = rng.random(b) < a.flip
        x = x.copy()
        x[hflip] = x[hflip][..., ::-1]
        x[vflip] = x[vflip][..., ::-1, :]
        target = x.copy()
        u = rng.random(b)
        for i in np.nonzero(u < a.drop_all_bands + a.drop_half_bands)[0]:
            if u[i] < a.drop_all_bands or c == 1:
                x[i] = 0.0
            else:
                x[i, rng.choice(c, size=c // 2, replace=False)] = 0.0
        return x, target

    def sample(self) -> Batch:
        """The next batch."""
        s = self.sets[int(self.rng.choice(len(self.sets), p=self.weights))]
        idx = np.sort(self.rng.choice(len(s), size=min(self.batch_size, len(s)), replace=False))
        x, target = self.augment_pixels(s.normalised(idx))
        time_enc, latlon_enc = s.time_encoding(idx), s.latlon_encoding(idx)
        zero = self.rng.random(len(idx)) < self.augment.zero_metadata
        time_enc[zero] = 0.0
        latlon_enc[zero] = 0.0
        return Batch(
            sensor=s.name,
            pixels=torch.from_numpy(np.ascontiguousarray(x)),
            target=torch.from_numpy(np.ascontiguousarray(target)),
            time=torch.from_numpy(time_enc),
            latlon=torch.from_numpy(latlon_enc),
            waves=torch.tensor(s.waves, dtype=torch.float32),
            gsd=float(s.gsd),
            rgb_indices=s.rgb_indices,
        )


# -- optimisation --------------------------------------------------------------------------------
def lr_at(step: int, *, base_lr: float, warmup: int, total: int, min_ratio: float = 0.01) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored with the weights)."""

    size: str = "nano"
    patch_size: int = 8
    batch_size: int = 64
    steps: int = 1000
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    #: weight of the view-consistency loss (0 = masked reconstruction only)
    view_loss: float = 0.0
    view_temperature: float = 0.2
    seed: int = 0
    precision: str = "auto"  # auto | bf16 | fp32
    checkpoint_every: int = 100
    log_every: int = 10
    set_weights: list[float] | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    steps_done: int
    wall_s: float
    losses: list[dict]
    weights: WeightsInfo | None
    out_dir: Path


def choose_precision(precision: str, device: torch.device) -> str:
    """Resolve ``auto`` by measuring matrix products (bf16 only where it is faster than fp32)."""
    if precision != "auto":
        return precision
    from clay_search.model.calibration import gemm_choice

    return gemm_choice(device, ("fp32", "bf16"))


# -- teacher -------------------------------------------------------------------------------------
class EncoderTeacher(nn.Module):
    """A frozen Clay encoder used as teacher: RGB pixels ``[B, 3, H, W]`` -> CLS ``[B, D]``."""

    def __init__(self, encoder: ClayEncoder, *, gsd: float = 10.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.gsd = gsd
        self.register_buffer("waves", torch.tensor([0.665, 0.56, 0.493]), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        b = rgb.shape[0]
        zeros = torch.zeros(b, 4, device=rgb.device, dtype=rgb.dtype)
        tokens = self.encoder(rgb, time=zeros, latlon=zeros, gsd=self.gsd, waves=self.waves)
        return tokens[:, 0].float()


def load_teacher(path: str | Path) -> tuple[nn.Module, int]:
    """A frozen teacher from a local file, and its output size.

    Accepts a TorchScript file (``.pt``/``.pth`` saved with ``torch.jit.save``; it must map RGB
    ``[B, 3, H, W]`` to ``[B, D]``) or Clay weights (a clay-search weights folder,
    ``.safetensors`` or a Clay ``.ckpt``), used through its CLS token. Never downloads.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"teacher {path} not found; the teacher must be a local file (no downloads)"
        )
    teacher: nn.Module
    if path.is_dir() or path.suffix in {".safetensors", ".json", ".ckpt"}:
        encoder, _ = load_encoder(path)
        teacher = EncoderTeacher(encoder)
    else:
        try:
            teacher = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"teacher {path} is neither Clay weights nor a TorchScript module: {e}"
            ) from None
    teacher.eval()
    with torch.no_grad():
        dim = int(teacher(torch.zeros(1, 3, 64, 64)).shape[-1])
    return teacher, dim


# -- the loop ------------------------------------------------------------------------------------
LOSS_FIELDS = [
    "step",
    "loss",
    "reconstruction_loss",
    "representation_loss",
    "view_loss",
    "lr",
    "sensor",
    "s",
]


def _write_losses(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOSS_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in LOSS_FIELDS})


def plot_losses(rows: list[dict], path: str | Path, *, window: int = 50) -> Path:
    """Loss curve PNG (raw per-step loss and a moving average, per sensor colour-free)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    loss = np.array([r["reconstruction_loss"] for r in rows], np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, loss, lw=0.5, alpha=0.35, label="masked L1 (per step)")
    if len(loss) >= window:
        ma = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], ma, lw=1.5, label=f"moving average ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("reconstruction loss (normalised units)")
    ax.set_title("Clay nano pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _start_from(model: ClayMAE, init: str | Path) -> None:
    """Load the encoder (and its decoder, when one goes with it) of the weights ``init``."""
    from clay_search.model.checkpoints import load_decoder

    encoder, info = load_encoder(init)
    if info.config.to_dict() != model.cfg.to_dict():
        raise CheckpointError(
            f"--init {init} is a {info.config.name} model "
            f"(dim {info.config.dim}, depth {info.config.depth}, patch {info.config.patch_size}); "
            f"this run trains {model.cfg.name} (dim {model.cfg.dim}, depth {model.cfg.depth}, "
            f"patch {model.cfg.patch_size}): pass the matching --size and --patch-size"
        )
    model.encoder.load_state_dict(encoder.state_dict())
    decoder, _ = load_decoder(info)
    if decoder is not None:
        model.decoder.load_state_dict(decoder.state_dict())


def train(
    sets: Sequence[ChipSet],
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    device: str | torch.device = "cpu",
    teacher: nn.Module | None = None,
    teacher_dim: int | None = None,
    max_time_s: float | None = None,
    stop_step: int | None = None,
    resume: bool = True,
    progress: Callable[[int, int, dict], None] | None = None,
    extra_meta: dict | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Pretrain a Clay MAE on ``sets`` and write the weights to ``out_dir``.

    ``out_dir`` receives ``checkpoint.pt`` (every ``checkpoint_every`` steps; a run resumes from
    it when ``resume``), ``losses.csv``, ``loss_curve.png`` and the weights (``model.safetensors``
    + ``config.json``). ``max_time_s`` stops early (the weights are still written, and the run can
    be resumed); ``stop_step`` stops at that step (the schedule still spans ``cfg.steps``), which
    makes a time-limited run reproducible. ``progress(step, total, row)`` runs after each step.
    ``init`` starts a new run from existing weights (continued pretraining: their encoder, and
    their decoder where one goes with them); a run resumed from its checkpoint ignores it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    mcfg = get_config(cfg.size, patch_size=cfg.patch_size)
    model = ClayMAE(
        mcfg,
        mask_ratio=cfg.mask_ratio,
        norm_pix_loss=cfg.norm_pix_loss,
        teacher=teacher,
        teacher_dim=teacher_dim,
        view_loss=cfg.view_loss,
        view_temperature=cfg.view_temperature,
    )
    ckpt_path = out / "checkpoint.pt"
    if init is not None and not (resume and ckpt_path.exists()):
        _start_from(model, init)
    model = model.to(device)
    params = [p for n, p in model.named_parameters() if p.requires_grad and "teacher" not in n]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    sampler = BatchSampler(
        sets, batch_size=cfg.batch_size, seed=cfg.seed, weights=cfg.set_weights, augment=cfg.augment
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict] = []
    step, elapsed_before = 0, 0.0
    if resume and ckpt_path.exists():
        ck = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"], strict=False)
        opt.load_state_dict(ck["optimizer"])
        sampler.set_state(ck["sampler"])
        gen.set_state(ck["generator"])
        rows, step, elapsed_before = ck["losses"], int(ck["step"]), float(ck["elapsed_s"])

    precision = choose_precision(cfg.precision, device)

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def checkpoint() -> None:
        state = {
            "model": {k: v for k, v in model.state_dict().items() if not k.startswith("teacher.")},
            "optimizer": opt.state_dict(),
            "sampler": sampler.state(),
            "generator": gen.get_state(),
            "losses": rows,
            "step": step,
            "elapsed_s": elapsed_before + (time.monotonic() - t0),
        }
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, str(tmp))
        tmp.replace(ckpt_path)

    model.train()
    t0 = time.monotonic()
    last = cfg.steps if stop_step is None else min(cfg.steps, stop_step)
    while step < last:
        if max_time_s is not None and time.monotonic() - t0 > max_time_s:
            break
        lr = lr_at(step, base_lr=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        b = sampler.sample()
        with autocast():
            losses = model(
                b.pixels.to(device),
                time=b.time.to(device),
                latlon=b.latlon.to(device),
                gsd=b.gsd,
                waves=b.waves.to(device),
                target_pixels=b.target.to(device),
                rgb_indices=b.rgb_indices,
                generator=gen if device.type == "cpu" else None,
            )
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        row = {
            "step": step,
            "loss": float(losses["loss"].detach()),
            "reconstruction_loss": float(losses["reconstruction_loss"].detach()),
            "representation_loss": float(losses["representation_loss"].detach())
            if "representation_loss" in losses
            else "",
            "view_loss": float(losses["view_loss"].detach()) if "view_loss" in losses else "",
            "lr": lr,
            "sensor": b.sensor,
            "s": round(elapsed_before + time.monotonic() - t0, 2),
        }
        rows.append(row)
        step += 1
        if progress is not None:
            progress(step, cfg.steps, row)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
            _write_losses(out / "losses.csv", rows)
    checkpoint()
    wall = elapsed_before + time.monotonic() - t0
    _write_losses(out / "losses.csv", rows)
    if rows:
        plot_losses(rows, out / "loss_curve.png")
    model.eval()
    meta = {
        "training": {
            **cfg.to_dict(),
            "steps_done": step,
            "wall_s": round(wall, 1),
            "precision_used": precision,
            "device": str(device),
            "teacher": teacher is not None,
            "final_loss_mean_last100": float(
                np.mean([r["reconstruction_loss"] for r in rows[-100:]])
            )
            if rows
            else None,
        },
        "normalisation": NormalisationRecord(
            [st for s in sets if (st := s.series_stats()) is not None]
        ).to_config(),
        **(extra_meta or {}),
    }
    info = save_weights(
        model.encoder.cpu(), mcfg, out, extra=meta, decoder_state=model.decoder.cpu().state_dict()
    )
    model.encoder.to(device)
    model.decoder.to(device)
    return TrainResult(step, wall, rows, info, out)


# -- a decoder for existing weights (the reconstruction quality score) ---------------------------
@dataclass
class DecoderResult:
    """What :func:`train_decoder` produced: the decoder file and its loss log."""

    path: Path
    steps_done: int
    wall_s: float
    losses: list[float]


def train_decoder(
    encoder: ClayEncoder,
    info: WeightsInfo,
    sets: Sequence[ChipSet],
    out: str | Path,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup: int = 100,
    mask_ratio: float = 0.75,
    seed: int = 0,
    set_weights: Sequence[float] | None = None,
    max_time_s: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> DecoderResult:
    """Fit an MAE decoder to a frozen ``encoder`` and write it to ``out`` (decoder.safetensors).

    For weights shipped without their decoder: the encoder (and so the model id and every
    stored vector) is unchanged; only the decoder learns, with the pretraining loss (L1 on
    masked patches, ``mask_ratio`` of them masked, seeded). Augmentation: flips and zeroed
    metadata only (no band dropping: the score sees whole chips).
    """
    from clay_search.model.checkpoints import save_decoder
    from clay_search.model.clay import ClayDecoder

    torch.manual_seed(seed)
    cfg = info.config
    encoder = encoder.cpu().eval()
    for p in encoder.parameters():
        p.requires_grad = False
    mae = ClayMAE(cfg, mask_ratio=mask_ratio)
    mae.encoder = encoder
    mae.decoder = ClayDecoder.from_config(cfg)
    params = list(mae.decoder.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.05},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.95),
    )
    augment = AugmentConfig(flip=0.5, drop_all_bands=0.0, drop_half_bands=0.0, zero_metadata=0.2)
    sampler = BatchSampler(
        sets, batch_size=batch_size, seed=seed, weights=set_weights, augment=augment
    )
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    mae.decoder.train()
    t0 = time.monotonic()
    step = 0
    while step < steps:
        if max_time_s is not None and time.monotonic() - t0 > max_time_s:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, base_lr=lr, warmup=warmup, total=steps)
        b = sampler.sample()
        with torch.no_grad():
            enc = encoder.encode_masked(
                b.pixels,
                time=b.time,
                latlon=b.latlon,
                gsd=b.gsd,
                waves=b.waves,
                mask_ratio=mask_ratio,
                shuffle=True,
                generator=gen,
            )
        predicted = mae.decoder(enc, time=b.time, latlon=b.latlon, gsd=b.gsd, waves=b.waves)
        loss = mae.reconstruction_loss(b.target, predicted, enc.mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if progress is not None:
            progress(step, steps, losses[-1])
    wall = time.monotonic() - t0
    mae.decoder.eval()
    meta = {
        "steps": steps,
        "steps_done": step,
        "batch_size": batch_size,
        "lr": lr,
        "mask_ratio": mask_ratio,
        "seed": seed,
        "sets": {s.name: len(s) for s in sets},
        "loss_mean_last100": float(np.mean(losses[-100:])) if losses else None,
        "wall_s": round(wall, 1),
    }
    path = save_decoder(mae.decoder, info, out, meta=meta)
    return DecoderResult(path, step, wall, losses)
