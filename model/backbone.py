"""The Clay encoder as a backbone for downstream models.

:class:`ClayBackbone` wraps any encoder :func:`~clay_search.model.checkpoints.load_encoder`
accepts (the bundled weights, clay-search weights folders, official Clay ``.ckpt``) and gives:

- the token outputs of chosen blocks, reshaped to patch grids ``[B, D, H/P, W/P]``
  (:meth:`ClayBackbone.forward_grids`);
- four intermediate blocks (the taps, as Clay's segmentation factory takes them) for a
  multi-scale pyramid at strides ``P/4, P/2, P, 2P``: the trainable up/down-sampling neck is
  :class:`~clay_search.model.heads.PyramidNeck`;
- CLS and pooled vectors for image-level heads (:meth:`ClayBackbone.forward_vector`);
- freezing: ``"all"``, ``"none"``, or an int N = unfreeze the last N blocks (and the final norm).

- LoRA (``lora=LoRAConfig(rank=...)``): low-rank adapters on the blocks' attention
  projections (:mod:`clay_search.model.lora`); the base encoder stays frozen, only the adapters
  (and the head) train.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clay_search.model.checkpoints import WeightsInfo, load_encoder
from clay_search.model.clay import ClayEncoder
from clay_search.model.embedder import POOLINGS, pool_tokens
from clay_search.model.lora import LoRAConfig, apply_lora, base_fingerprint, set_lora_trainable


def default_taps(depth: int) -> tuple[int, ...]:
    """Four block indices spread over ``depth`` (0-based), ending with the last block.

    nano (4 blocks) -> (0, 1, 2, 3); base (12) -> (2, 5, 8, 11); large (24) -> (5, 11, 17, 23).
    """
    if depth <= 4:
        return tuple(range(depth))
    return tuple(round(depth * k / 4) - 1 for k in (1, 2, 3, 4))


@dataclass
class Metadata:
    """What the encoder needs besides pixels, for one batch.

    ``waves`` ``[C]`` (um); ``gsd`` metres; ``time``/``latlon`` ``[B, 4]`` encodings (zeros =
    unknown; see :mod:`clay_search.model.encoding`).
    """

    waves: torch.Tensor
    gsd: float | torch.Tensor
    time: torch.Tensor | None = None
    latlon: torch.Tensor | None = None
    #: precomputed ``encoder.patch_embedding.generate(waves)`` (weight, bias), or None
    patch_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None


class ClayBackbone(nn.Module):
    """A Clay encoder with block taps and a freezing policy.

    ``taps``: the blocks whose outputs :meth:`forward_grids`/:meth:`forward_pyramid` return
    (default :func:`default_taps`). ``norm_taps`` applies the encoder's final LayerNorm to every
    tap (as DINOv2's intermediate layers do), so all levels have the same scale.
    ``freeze``: ``"all"`` (no encoder gradients), ``"none"``, or N (last N blocks trainable).
    ``lora``: adapters on the encoder (needs ``freeze="all"``: the base weights stay fixed and
    only the adapters train); ``lora_fingerprint`` is then the SHA-256 of the adapted base
    weights (:func:`~clay_search.model.lora.base_fingerprint`).
    """

    def __init__(
        self,
        encoder: ClayEncoder,
        info: WeightsInfo | None = None,
        *,
        taps: Sequence[int] | None = None,
        freeze: str | int = "all",
        norm_taps: bool = True,
        lora: LoRAConfig | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.info = info
        self.depth = len(encoder.transformer.layers)
        self.taps = tuple(taps) if taps is not None else default_taps(self.depth)
        bad = [t for t in self.taps if not 0 <= t < self.depth]
        if bad:
            raise ValueError(f"taps {bad} outside the encoder's {self.depth} blocks")
        self.norm_taps = norm_taps
        self.freeze = freeze
        self.lora = lora
        self.lora_fingerprint: str | None = None
        if lora is not None:
            if freeze not in ("all", 0):
                raise ValueError(
                    f"LoRA trains adapters on a frozen encoder; freeze={freeze!r} cannot be "
                    "combined with it (drop --unfreeze-last/--no-freeze, or drop --lora)"
                )
            self.lora_fingerprint = base_fingerprint(encoder, lora)
            apply_lora(encoder, lora)
        self.set_freeze(freeze)

    @classmethod
    def from_weights(
        cls, path: str | Path | None = None, *, size: str | None = None, **kwargs
    ) -> ClayBackbone:
        """Load weights (``None``: the bundled ones) and wrap them."""
        encoder, info = load_encoder(path, size=size)
        return cls(encoder, info, **kwargs)

    # -- facts -----------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Token width D."""
        return self.encoder.dim

    @property
    def patch_size(self) -> int:
        """Patch size P: grids are ``H/P x W/P``."""
        return self.encoder.patch_size

    @property
    def model_id(self) -> str:
        """The encoder's model id (``unversioned`` without weights info)."""
        return self.info.model_id if self.info is not None else "unversioned"

    @property
    def fully_frozen(self) -> bool:
        """Whether no encoder parameter takes gradients."""
        return not any(p.requires_grad for p in self.encoder.parameters())

    # -- freezing --------------------------------------------------------------------------------
    def set_freeze(self, freeze: str | int) -> None:
        """``"all"``, ``"none"`` or N: the last N blocks (and the final norm) train."""
        if freeze == "all" or freeze == 0:
            n = 0
        elif freeze == "none":
            n = self.depth
        elif isinstance(freeze, int) and 0 < freeze <= self.depth:
            n = freeze
        else:
            raise ValueError(
                f"freeze must be 'all', 'none' or a number of last blocks 1..{self.depth}, "
                f"got {freeze!r}"
            )
        self.freeze = freeze
        full = n == self.depth
        for p in self.encoder.parameters():
            p.requires_grad = full
        if not full:
            for layer in list(self.encoder.transformer.layers)[self.depth - n :]:
                for p in layer.parameters():
                    p.requires_grad = True
            for p in self.encoder.transformer.norm.parameters():
                p.requires_grad = n > 0
        if self.lora is not None:
            set_lora_trainable(self.encoder)

    def train(self, mode: bool = True) -> ClayBackbone:
        """Frozen encoders stay in eval mode (no dropout/statistics change)."""
        super().train(mode)
        if self.fully_frozen:
            self.encoder.eval()
        return self

    # -- forward pieces --------------------------------------------------------------------------
    def _embed(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        """Patch embedding + encodings + CLS.  ``[B, C, H, W] -> [B, 1 + L, D]``."""
        b = pixels.shape[0]
        zeros = pixels.new_zeros((b, 4))
        time = meta.time if meta.time is not None else zeros
        latlon = meta.latlon if meta.latlon is not None else zeros
        enc = self.encoder
        patches = enc.patchify(pixels, meta.waves, meta.patch_weights)
        patches = enc.add_encodings(patches, time.to(pixels), latlon.to(pixels), meta.gsd)
        cls = enc.cls_token.to(patches.dtype).expand(b, -1, -1)
        return torch.cat((cls, patches), dim=1)

    def forward_blocks(
        self,
        pixels: torch.Tensor,
        meta: Metadata,
        blocks: Sequence[int] | None = None,
        *,
        final: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Token outputs ``[B, 1 + L, D]`` of ``blocks`` (default: the taps; normed when
        ``norm_taps``) and the final normed tokens ``[B, 1 + L, D]`` (``None`` when ``final`` is
        off: the pass then stops after the last tap)."""
        blocks = self.taps if blocks is None else tuple(blocks)
        x = self._embed(pixels, meta)
        tr = self.encoder.transformer
        outs: dict[int, torch.Tensor] = {}
        stop = self.depth - 1 if final or not blocks else max(blocks)
        for i, (attn, ff) in enumerate(tr.layers):
            x = attn(x) + x
            x = ff(x) + x
            if i in blocks:
                outs[i] = tr.norm(x) if self.norm_taps else x
            if i == stop:
                break
        return [outs[b] for b in blocks], (tr.norm(x) if final else None)

    def tokens(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        """Final tokens ``[B, 1 + L, D]`` (CLS first), like ``ClayEncoder.forward``."""
        out = self.forward_blocks(pixels, meta, blocks=())[1]
        assert out is not None
        return out

    def to_grid(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Patch tokens of ``[B, 1 + L, D]`` as a grid ``[B, D, H/P, W/P]`` (CLS dropped)."""
        p = self.patch_size
        b, _, d = tokens.shape
        return tokens[:, 1:].transpose(1, 2).reshape(b, d, height // p, width // p)

    def forward_grids(self, pixels: torch.Tensor, meta: Metadata) -> list[torch.Tensor]:
        """The taps as patch grids: ``len(taps)`` x ``[B, D, H/P, W/P]``."""
        h, w = pixels.shape[-2:]
        taps, _ = self.forward_blocks(pixels, meta, final=False)
        return [self.to_grid(t, h, w) for t in taps]

    def forward_vector(
        self, pixels: torch.Tensor, meta: Metadata, pooling: str = "cls"
    ) -> torch.Tensor:
        """One vector per chip: ``cls``/``mean`` ``[B, D]``; ``mean+std``/``cls+mean``
        ``[B, 2D]``."""
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLINGS)}")
        return pool_tokens(self.tokens(pixels, meta), pooling)

    def forward(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        """Final tokens ``[B, 1 + L, D]``."""
        return self.tokens(pixels, meta)


def vector_dim(dim: int, pooling: str) -> int:
    """Width of :meth:`ClayBackbone.forward_vector` for token width ``dim``."""
    return dim * (1 if pooling in {"cls", "mean"} else 2)
