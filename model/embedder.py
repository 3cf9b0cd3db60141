"""Batched inference: chips of any supported sensor in, CLS (and patch) embeddings out.

The wavelength-generated patch-embedding weights are computed in fp32 once per band set and
cached. ``precision="auto"`` is decided by measuring the real encoder on this device at the first
batch's chip size (:mod:`clay_search.model.calibration`, cached per machine and model); a forced
``bf16``/``fp16`` runs a copy of the weights in that type (no per-call casts, unlike autocast),
``tf32`` (CUDA) runs fp32 weights with TF32 matrix products, ``int8`` (CPU, opt-in) dynamically
quantised linear layers. Outputs are always float32 numpy arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clay_search.errors import BandMismatchError, EmbedderOptionError
from clay_search.model.calibration import (
    DTYPES,
    Calibration,
    calibrate,
    check_precision,
    make_runner,
    precision_context,
)
from clay_search.model.checkpoints import WeightsInfo, load_decoder, load_encoder
from clay_search.model.clay import ClayEncoder
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.normalise import Normaliser, sensor_normaliser
from clay_search.model.reconstruction import ReconstructionScorer
from clay_search.model.sensors import Band, Sensor, SensorRegistry


def cpu_supports_bf16() -> bool:
    """Whether this CPU lists native bf16 instructions (AVX512-BF16 or AMX).

    A fact for reports only: listing them does not make bf16 faster (``precision="auto"``
    measures instead, see :mod:`clay_search.model.calibration`).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: Ways to summarise a chip's tokens into one vector (``D`` = token width).
POOLINGS = {
    "cls": "the CLS token (D values)",
    "mean": "the mean of the patch tokens (D)",
    "mean+std": "the mean and the standard deviation of the patch tokens, concatenated (2D)",
    "cls+mean": "CLS and the patch mean, each L2-normalised, concatenated (2D)",
}


def vector_model_id(
    weights_id: str, pooling: str, standard: tuple[torch.Tensor, torch.Tensor] | None = None
) -> str:
    """The model id of chip vectors: the weights' id, ``-<pooling>`` unless CLS, and
    ``-z<hash>`` of the (mean, std) they were z-scored with (what a store records)."""
    base = weights_id if pooling == "cls" else f"{weights_id}-{pooling}"
    if standard is None:
        return base
    h = hashlib.sha256(torch.cat(standard).numpy().tobytes()).hexdigest()[:8]
    return f"{base}-z{h}"


def pool_tokens(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per chip from tokens ``[B, 1 + L, D]`` (CLS first) -> ``[B, D or 2D]``."""
    cls, patches = tokens[:, 0], tokens[:, 1:]
    if pooling == "cls":
        return cls
    if pooling == "mean":
        return patches.mean(1)
    if pooling == "mean+std":
        return torch.cat([patches.mean(1), patches.std(1, correction=0)], dim=1)
    if pooling == "cls+mean":
        norm = torch.nn.functional.normalize
        return torch.cat([norm(cls, dim=1), norm(patches.mean(1), dim=1)], dim=1)
    raise EmbedderOptionError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}")


@dataclass
class EmbeddingBatch:
    """Embeddings of one batch.

    ``embedding`` ``[B, E]`` is the chip vector stored and searched (see ``Embedder.pooling``);
    ``cls`` ``[B, D]`` the CLS token; ``patches`` ``[B, L, D]`` the patch grid when asked for;
    ``recon_error`` ``[B]`` the quality score when asked for (None when the weights have no
    decoder; see :mod:`clay_search.model.reconstruction`).
    """

    embedding: np.ndarray
    cls: np.ndarray
    patches: np.ndarray | None = None
    recon_error: np.ndarray | None = None


class Embedder:
    """Turns normalised chips into embeddings with a Clay encoder.

    ``precision``: ``"auto"`` (measured on this device at the first batch's chip size and cached,
    see :mod:`clay_search.model.calibration`; :attr:`calibration` holds the figures), or one of
    ``"fp32"``, ``"bf16"``, ``"fp16"``, ``"tf32"`` (CUDA), ``"int8"`` (CPU, opt-in: dynamically
    quantised linear layers). ``cache_weights`` caches the generated patch weights per band set.
    ``pooling`` (see :data:`POOLINGS`) makes the chip vector; ``None`` takes the one the weights
    recommend (``pooling`` in their config.json; ``cls`` for official Clay checkpoints).
    ``standardise``: z-score the chip vector per feature with the statistics shipped with the
    weights for that pooling (``None``: whenever they exist). Search is cosine on these vectors;
    standardising first gave 3-6 points of EuroSAT kNN precision (model/weights/MODEL_CARD.md).
    """

    def __init__(
        self,
        encoder: ClayEncoder,
        info: WeightsInfo | None = None,
        *,
        sensors: SensorRegistry | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        cache_weights: bool = True,
        pooling: str | None = None,
        standardise: bool | None = None,
    ) -> None:
        pooling = pooling or (info.pooling if info is not None else "cls")
        if pooling not in POOLINGS:
            raise EmbedderOptionError(
                f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}"
            )
        self.pooling = pooling
        stats = ((info.embedding_stats if info is not None else None) or {}).get(pooling)
        if standardise and stats is None:
            raise EmbedderOptionError(
                f"these weights ship no embedding statistics for pooling {pooling!r}; "
                "use standardise=False (or None)"
            )
        self._standard = None
        if stats is not None and standardise is not False:
            mean = torch.tensor(stats["mean"], dtype=torch.float32)
            std = torch.tensor(stats["std"], dtype=torch.float32).clamp(min=1e-6)
            self._standard = (mean, std)
        self.device = torch.device(device)
        if precision != "auto":
            check_precision(precision, self.device)
        self.encoder = encoder.to(self.device).eval()
        self.info = info
        self.sensors = sensors or SensorRegistry.default()
        self.requested_precision = precision
        self.calibration: Calibration | None = None
        self._precision: str | None = None
        self._runner: torch.nn.Module | None = None
        self.cache_weights = cache_weights
        self._weight_cache: dict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._scorer: ReconstructionScorer | None = None
        self._decoder_note: str | None = None
        if precision != "auto":
            self._use(precision)

    def _use(self, precision: str) -> None:
        self._precision = precision
        self._runner = make_runner(self.encoder, precision)
        self._weight_cache.clear()  # cached in the run dtype

    def resolve_precision(
        self, chip_size: int = 256, bands: int = 10, *, use_cache: bool = True
    ) -> str:
        """Decide ``auto`` now (else at the first batch) for chips of ``chip_size`` px.

        Returns the precision in use; a forced precision is returned as it is.
        """
        if self._precision is None:
            self.calibration = calibrate(
                self.encoder,
                model=self.model_id,
                device=self.device,
                chip_size=chip_size,
                bands=bands,
                use_cache=use_cache,
            )
            self._use(self.calibration.precision)
        assert self._precision is not None  # set by _use
        return self._precision

    @property
    def precision(self) -> str:
        """The precision in use (``"auto"`` until the first batch decides it)."""
        return self._precision or "auto"

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the transformer runs in (fp32 until ``auto`` is decided)."""
        return DTYPES[self._precision or "fp32"]

    @property
    def runner(self) -> torch.nn.Module:
        """The module that runs the encoder in :attr:`precision` (decides ``auto`` at 256 px)."""
        if self._runner is None:
            self.resolve_precision()
        assert self._runner is not None  # set by _use
        return self._runner

    def precision_report(self) -> dict[str, Any]:
        """What runs and why: requested, used, and the calibration's figures when measured."""
        out: dict[str, Any] = {
            "requested": self.requested_precision,
            "used": self._precision,
            "device": str(self.device),
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }
        if self.calibration is not None:
            cal = self.calibration
            out["calibration"] = {
                "cached": cal.cached,
                "measured_at": cal.measured_at,
                "chip_size": cal.chip_size,
                "blocks": f"{cal.blocks} of {cal.depth}",
                "candidates": cal.candidates,
                "wall_s": cal.wall_s,
                "cache_file": cal.path,
            }
        return out

    @classmethod
    def from_weights(cls, path: str | Path | None = None, **kwargs) -> Embedder:
        """Load weights (``None``: the weights shipped with clay-search) and wrap them."""
        encoder, info = load_encoder(path)
        return cls(encoder, info, **kwargs)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Identity of the vectors: weights hash, plus the pooling unless it is CLS.

        Stores never mix model ids.
        """
        return vector_model_id(
            self.info.model_id if self.info else "unversioned", self.pooling, self._standard
        )

    @property
    def standardised(self) -> bool:
        """Whether chip vectors are z-scored with the statistics shipped with the weights."""
        return self._standard is not None

    @property
    def token_dim(self) -> int:
        """Token width D (CLS and each patch embedding)."""
        return self.encoder.dim

    @property
    def dim(self) -> int:
        """Size of the chip vector (``embedding``): D or 2D depending on the pooling."""
        return self.encoder.dim * (1 if self.pooling in {"cls", "mean"} else 2)

    @property
    def patch_size(self) -> int:
        """Patch size P in pixels; chip sizes must be multiples of it."""
        return self.encoder.patch_size

    # -- quality score ---------------------------------------------------------------------------
    def _load_scorer(self) -> None:
        if self._decoder_note is not None:
            return
        if self.info is None:
            self._decoder_note = "no weights info, so no decoder: no quality score"
            return
        decoder, self._decoder_note = load_decoder(self.info)
        if decoder is not None:
            self._scorer = ReconstructionScorer(self.encoder, decoder.to(self.device))

    @property
    def has_decoder(self) -> bool:
        """Whether these weights come with an MAE decoder (so chips get a quality score)."""
        self._load_scorer()
        return self._scorer is not None

    def quality_report(self) -> dict[str, Any]:
        """How the quality score is made: decoder found (and where), mask ratio, seed."""
        self._load_scorer()
        sc = self._scorer
        return {
            "decoder": sc is not None,
            "note": self._decoder_note,
            "mask_ratio": None if sc is None else sc.mask_ratio,
            "seed": None if sc is None else sc.seed,
            "units": "mean L1 of masked patches, normalised pixel units",
        }

    # -- helpers ---------------------------------------------------------------------------------
    def patch_weights(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch-embedding weights for ``waves``, generated in fp32, in the run dtype (cached)."""
        key = tuple(round(float(w), 6) for w in waves.tolist())
        hit = self._weight_cache.get(key) if self.cache_weights else None
        if hit is None:
            with torch.inference_mode():
                w, b = self.encoder.patch_embedding.generate(waves.to(self.device).float())
                hit = (w.to(self.dtype), None if b is None else b.to(self.dtype))
            if self.cache_weights:
                self._weight_cache[key] = hit
        return hit

    # -- embedding -------------------------------------------------------------------------------
    def embed(
        self,
        pixels: np.ndarray | torch.Tensor,
        *,
        waves: Sequence[float] | torch.Tensor,
        gsd: float,
        datetimes: Sequence[datetime | None] | None = None,
        lonlats: Sequence[tuple[float, float] | None] | None = None,
        patches: bool = False,
        recon_error: bool = False,
        valid: np.ndarray | None = None,
    ) -> EmbeddingBatch:
        """Embed normalised pixels ``[B, C, H, W]``.

        ``waves``: central wavelengths (um) of the C bands; ``datetimes`` and ``lonlats`` (chip
        centres, degrees) feed the time/location encodings (zeros where unknown).
        ``recon_error`` also scores each chip's reconstruction (fp32, fixed masks; ``valid``
        ``[B, H, W]`` weights it by valid pixels); ``None`` in the output without a decoder.
        """
        x = (
            torch.as_tensor(
                np.asarray(pixels, dtype=np.float32) if not torch.is_tensor(pixels) else pixels
            )
            .float()
            .to(self.device)
        )
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise BandMismatchError(
                f"pixels must be [B, C, H, W] (or one chip [C, H, W]), got shape {tuple(x.shape)}"
            )
        b = x.shape[0]
        waves_t = torch.as_tensor(waves, dtype=torch.float32).flatten()
        if waves_t.numel() != x.shape[1]:
            raise BandMismatchError(
                f"pixels have {x.shape[1]} bands but {waves_t.numel()} wavelengths were given: "
                "give one wavelength per band, in the pixels' band order"
            )
        if self._precision is None:
            self.resolve_precision(chip_size=int(x.shape[-1]), bands=int(x.shape[1]))
        time = encode_time(datetimes if datetimes is not None else [None] * b)
        latlon = encode_latlon(lonlats if lonlats is not None else [None] * b)
        weights = self.patch_weights(waves_t)
        with precision_context(self._precision, self.device), torch.inference_mode():
            tokens = self.runner(
                x.to(self.dtype),
                time=time.to(self.device, self.dtype),
                latlon=latlon.to(self.device, self.dtype),
                gsd=float(gsd),
                waves=waves_t,
                patch_weights=weights,
            )
        tokens = tokens.float()
        vec = pool_tokens(tokens, self.pooling).cpu()
        if self._standard is not None:
            vec = (vec - self._standard[0]) / self._standard[1]
        out = EmbeddingBatch(
            embedding=vec.numpy(),
            cls=tokens[:, 0].cpu().numpy(),
        )
        if patches:
            out.patches = tokens[:, 1:].cpu().numpy()
        if recon_error and self.has_decoder:
            assert self._scorer is not None
            out.recon_error = self._scorer.score(
                x, time=time, latlon=latlon, gsd=float(gsd), waves=waves_t, valid=valid
            ).score.astype(np.float32)
        return out

    def embed_raw(
        self,
        raw: np.ndarray,
        sensor: Sensor | str,
        bands: Sequence[str | Band],
        *,
        normaliser: Normaliser | None = None,
        valid: np.ndarray | None = None,
        gsd: float | None = None,
        datetimes: Sequence[datetime | None] | None = None,
        lonlats: Sequence[tuple[float, float] | None] | None = None,
        patches: bool = False,
        recon_error: bool = False,
    ) -> EmbeddingBatch:
        """Normalise raw sensor values ``[B, C, H, W]`` for ``bands`` and embed them
        (``recon_error``: also the quality score, over the ``valid`` pixels)."""
        s = self.sensors.get(sensor) if isinstance(sensor, str) else sensor
        blist = [b if isinstance(b, Band) else s.band(b) for b in bands]
        raw_bands = np.shape(raw)[-3] if np.ndim(raw) >= 3 else None
        if raw_bands != len(blist):
            shape = tuple(np.shape(raw))
            raise BandMismatchError(
                f"raw chips of shape {shape} have {raw_bands} bands (axis -3 of [B, C, H, W]) "
                f"but {len(blist)} band names were given ({', '.join(b.name for b in blist)}): "
                "give one band name per channel, in the array's order"
            )
        norm = normaliser or sensor_normaliser(s, blist)
        x = norm(raw, valid)
        return self.embed(
            x,
            waves=[b.wavelength for b in blist],
            gsd=s.gsd if gsd is None else gsd,
            datetimes=datetimes,
            lonlats=lonlats,
            patches=patches,
            recon_error=recon_error,
            valid=None if valid is None else np.asarray(valid),
        )
