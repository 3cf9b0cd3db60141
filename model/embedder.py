"""Batched inference: chips of any supported sensor in, CLS (and patch) embeddings out.

Fast path: the wavelength-generated patch-embedding weights are computed in fp32 once per band
set and cached, and on CPUs with native bf16 (AVX512-BF16 / AMX) or bf16-capable GPUs the encoder
runs from a bf16 copy of its weights (no per-call casts, unlike autocast). Outputs are always
float32 numpy arrays.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from clay_search.model.checkpoints import WeightsInfo, load_encoder
from clay_search.model.clay import ClayEncoder
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.normalise import Normaliser, sensor_normaliser
from clay_search.model.sensors import Band, Sensor, SensorRegistry


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
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
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}")


@dataclass
class EmbeddingBatch:
    """Embeddings of one batch.

    ``embedding`` ``[B, E]`` is the chip vector stored and searched (see ``Embedder.pooling``);
    ``cls`` ``[B, D]`` the CLS token; ``patches`` ``[B, L, D]`` the patch grid when asked for.
    """

    embedding: np.ndarray
    cls: np.ndarray
    patches: np.ndarray | None = None


class Embedder:
    """Turns normalised chips into embeddings with a Clay encoder.

    ``precision``: ``"auto"`` (bf16 where the CPU/GPU supports it, else fp32), ``"bf16"`` or
    ``"fp32"``. ``cache_weights`` caches the generated patch weights per wavelength set.
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
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}")
        self.pooling = pooling
        stats = ((info.embedding_stats if info is not None else None) or {}).get(pooling)
        if standardise and stats is None:
            raise ValueError(
                f"these weights ship no embedding statistics for pooling {pooling!r}; "
                "use standardise=False (or None)"
            )
        self._standard = None
        if stats is not None and standardise is not False:
            mean = torch.tensor(stats["mean"], dtype=torch.float32)
            std = torch.tensor(stats["std"], dtype=torch.float32).clamp(min=1e-6)
            self._standard = (mean, std)
        if precision not in {"auto", "bf16", "fp32"}:
            raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.info = info
        self.sensors = sensors or SensorRegistry.default()
        if precision == "auto":
            use_bf16 = (
                torch.cuda.is_bf16_supported()
                if self.device.type == "cuda"
                else cpu_supports_bf16()
            )
            precision = "bf16" if use_bf16 else "fp32"
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        # bf16: a bf16 copy of the weights runs the transformer; fp32 weights generate patches
        self._runner = (
            copy.deepcopy(self.encoder).to(self.dtype) if precision == "bf16" else self.encoder
        )
        self.cache_weights = cache_weights
        self._weight_cache: dict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}

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
        base = self.info.model_id if self.info else "unversioned"
        if self.pooling != "cls":
            base = f"{base}-{self.pooling}"
        if self._standard is not None:
            h = hashlib.sha256(torch.cat(self._standard).numpy().tobytes()).hexdigest()[:8]
            base = f"{base}-z{h}"
        return base

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
    ) -> EmbeddingBatch:
        """Embed normalised pixels ``[B, C, H, W]``.

        ``waves``: central wavelengths (um) of the C bands; ``datetimes`` and ``lonlats`` (chip
        centres, degrees) feed the time/location encodings (zeros where unknown).
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
        b = x.shape[0]
        waves_t = torch.as_tensor(waves, dtype=torch.float32)
        time = encode_time(datetimes if datetimes is not None else [None] * b)
        latlon = encode_latlon(lonlats if lonlats is not None else [None] * b)
        weights = self.patch_weights(waves_t)
        with torch.inference_mode():
            tokens = self._runner(
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
    ) -> EmbeddingBatch:
        """Normalise raw sensor values ``[B, C, H, W]`` for ``bands`` and embed them."""
        s = self.sensors.get(sensor) if isinstance(sensor, str) else sensor
        blist = [b if isinstance(b, Band) else s.band(b) for b in bands]
        norm = normaliser or sensor_normaliser(s, blist)
        x = norm(raw, valid)
        return self.embed(
            x,
            waves=[b.wavelength for b in blist],
            gsd=s.gsd if gsd is None else gsd,
            datetimes=datetimes,
            lonlats=lonlats,
            patches=patches,
        )
