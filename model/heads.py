"""Task heads on a :class:`~clay_search.model.backbone.ClayBackbone` (plain torch, no timm).

- :class:`LinearHead`, :class:`MLPHead`: ``[B, E] -> [B, K]`` for classification (K classes,
  single- or multi-label) and per-chip regression (K = 1).
- :class:`PyramidNeck`: four tapped grids ``[B, D, h, w]`` -> four levels at strides
  ``P/4, P/2, P, 2P`` (``[B, C, 4h, 4w]`` ... ``[B, C, h/2, w/2]``). Up-sampling is bilinear
  followed by a 3x3 conv, never a transposed conv: patch-level transposed convs are where the
  checkerboard artefacts Clay's users report come from.
- :class:`FPNDecoder`: UPerNet-style fusion (top-down FPN, all levels resized to the finest and
  concatenated) -> ``[B, K, H, W]`` logits at the full input resolution.
- :class:`ChipModel` and :class:`DenseModel`: backbone + head, ``forward(pixels, meta)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clay_search.model.backbone import ClayBackbone, Metadata, vector_dim


class LinearHead(nn.Module):
    """LayerNorm -> dropout -> Linear.  ``[B, E] -> [B, K]``."""

    def __init__(self, in_dim: int, out_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.norm(x)))


class MLPHead(nn.Module):
    """LayerNorm -> Linear -> GELU -> dropout -> Linear.  ``[B, E] -> [B, K]``."""

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Conv -> GroupNorm -> GELU (GroupNorm: independent of the batch size)."""
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(groups, cout), nn.GELU()
    )


class _Up(nn.Module):
    """Bilinear x``factor`` then a 3x3 conv.  ``[B, Cin, h, w] -> [B, Cout, fh, fw]``."""

    def __init__(self, cin: int, cout: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = _conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return self.conv(x)


class PyramidNeck(nn.Module):
    """Four grids ``[B, D, h, w]`` -> levels ``[B, C, 4h, 4w]``, ``[B, C, 2h, 2w]``,
    ``[B, C, h, w]``, ``[B, C, ceil(h/2), ceil(w/2)]`` (strides P/4, P/2, P, 2P)."""

    def __init__(self, dim: int, channels: int = 64) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            [
                nn.Sequential(_Up(dim, channels, 2), _Up(channels, channels, 2)),
                _Up(dim, channels, 2),
                _conv(dim, channels, 1),
                nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), _conv(dim, channels, 1)),
            ]
        )

    def forward(self, grids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(grids) != 4:
            raise ValueError(f"the pyramid needs 4 tapped grids, got {len(grids)}")
        return [lvl(g) for lvl, g in zip(self.levels, grids, strict=True)]


class FPNDecoder(nn.Module):
    """Pyramid levels (finest first, each ``[B, C, *, *]``) -> logits ``[B, K, H, W]``.

    Top-down FPN sums, a 3x3 conv per level, all levels bilinearly resized to the finest and
    fused (UPerNet's fusion), a 1x1 classifier, and bilinear up-sampling to ``out_size``.
    """

    def __init__(self, channels: int, num_outputs: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        self.smooth = nn.ModuleList(_conv(channels, channels) for _ in range(4))
        self.fuse = _conv(4 * channels, channels, 1)
        self.drop = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_outputs, 1)

    def forward(self, levels: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        feats = list(levels)
        for i in range(len(feats) - 2, -1, -1):  # coarse to fine
            up = F.interpolate(
                feats[i + 1], size=feats[i].shape[-2:], mode="bilinear", align_corners=False
            )
            feats[i] = feats[i] + up
        size = feats[0].shape[-2:]
        outs = [
            F.interpolate(s(f), size=size, mode="bilinear", align_corners=False)
            if f.shape[-2:] != size
            else s(f)
            for s, f in zip(self.smooth, feats, strict=True)
        ]
        x = self.classifier(self.drop(self.fuse(torch.cat(outs, dim=1))))
        return F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)


class ChipModel(nn.Module):
    """Backbone + vector head: ``forward(pixels [B, C, H, W], meta) -> [B, K]``."""

    def __init__(
        self,
        backbone: ClayBackbone,
        num_outputs: int,
        *,
        pooling: str = "mean+std",
        head: str = "linear",
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.head_kind = head
        e = vector_dim(backbone.dim, pooling)
        self.head: nn.Module
        if head == "linear":
            self.head = LinearHead(e, num_outputs, dropout=dropout)
        elif head == "mlp":
            self.head = MLPHead(e, num_outputs, hidden=hidden, dropout=dropout or 0.1)
        else:
            raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")

    def features(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        """The pooled vector ``[B, E]`` (what a frozen backbone lets the trainer cache)."""
        return self.backbone.forward_vector(pixels, meta, self.pooling)

    def decode(self, features: torch.Tensor, out_size=None) -> torch.Tensor:
        """Head on cached features.  ``[B, E] -> [B, K]``."""
        return self.head(features)

    def forward(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        return self.head(self.features(pixels, meta))


class DenseModel(nn.Module):
    """Backbone + pyramid neck + FPN decoder: ``forward(pixels, meta) -> [B, K, H, W]``.

    K = classes for segmentation, 1 for pixel-wise regression.
    """

    def __init__(
        self,
        backbone: ClayBackbone,
        num_outputs: int,
        *,
        channels: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(backbone.taps) != 4:
            raise ValueError(f"a dense model needs 4 taps, the backbone has {backbone.taps}")
        self.backbone = backbone
        self.neck = PyramidNeck(backbone.dim, channels)
        self.decoder = FPNDecoder(channels, num_outputs, dropout=dropout)

    def features(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        """The 4 tapped grids stacked: ``[B, 4, D, H/P, W/P]``."""
        return torch.stack(self.backbone.forward_grids(pixels, meta), dim=1)

    def decode(self, features: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Neck + decoder on ``[B, 4, D, h, w]`` -> ``[B, K, *out_size]``."""
        return self.decoder(self.neck(features.unbind(1)), out_size)

    def forward(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        return self.decode(self.features(pixels, meta), (pixels.shape[-2], pixels.shape[-1]))
