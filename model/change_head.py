"""Supervised change detection: a siamese Clay backbone and the dense head of
:mod:`clay_search.model.heads` on the fused features of two dates.

Input layout (so the generic trainer in :mod:`clay_search.model.finetune` and the raster
writer of :mod:`clay_search.predict` handle pairs as plain chips):

- pixels ``[B, 2C, S, S]``: the before date's C normalised bands, then the after date's;
- ``Metadata.time`` ``[B, 8]``: the before date's time encoding, then the after date's (``[B, 4]``
  = both dates share it); ``latlon`` ``[B, 4]`` (one place).

:class:`ChangeModel` runs the (shared, usually frozen) backbone once over both dates, taps the
same four blocks of each, fuses every tap as ``concat(before, after, |after - before|)``
(``fusion="concat+diff"``, 3D channels) or ``|after - before|`` (``"diff"``, D channels) and
decodes with :class:`~clay_search.model.heads.PyramidNeck` +
:class:`~clay_search.model.heads.FPNDecoder` into ``[B, 2, S, S]`` logits (no change, change).
"""

from __future__ import annotations

import torch

from clay_search.model.backbone import ClayBackbone, Metadata
from clay_search.model.heads import DenseModel, PyramidNeck

FUSIONS = {"concat+diff": 3, "diff": 1}


def fuse(before: torch.Tensor, after: torch.Tensor, fusion: str) -> torch.Tensor:
    """Fuse two dates' grids ``[B, D, h, w]`` -> ``[B, kD, h, w]`` (k = ``FUSIONS[fusion]``)."""
    diff = (after - before).abs()
    if fusion == "diff":
        return diff
    return torch.cat((before, after, diff), dim=1)


def split_meta(meta: Metadata, batch: int) -> Metadata:
    """One metadata for the stacked ``[before; after]`` batch of ``2 * batch`` chips."""
    t = meta.time
    if t is None:
        time = None
    elif t.shape[-1] == 8:
        time = torch.cat((t[:, :4], t[:, 4:]), dim=0)
    else:
        time = torch.cat((t, t), dim=0)
    ll = meta.latlon
    return Metadata(
        meta.waves,
        meta.gsd,
        time,
        None if ll is None else torch.cat((ll, ll), dim=0),
        meta.patch_weights,
    )


class ChangeModel(DenseModel):
    """Siamese backbone + fused taps + pyramid neck + FPN decoder.

    ``forward(pixels [B, 2C, S, S], meta) -> [B, num_outputs, S, S]`` (``num_outputs`` 2: the
    logits of no change / change). ``features`` ``[B, 2, 4, D, h, w]`` (both dates' taps) is what
    a frozen backbone lets the trainer cache; ``decode`` fuses and decodes them.
    """

    def __init__(
        self,
        backbone: ClayBackbone,
        num_outputs: int = 2,
        *,
        channels: int = 64,
        dropout: float = 0.1,
        fusion: str = "concat+diff",
    ) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {sorted(FUSIONS)}, got {fusion!r}")
        super().__init__(backbone, num_outputs, channels=channels, dropout=dropout)
        self.fusion = fusion
        # the neck reads the fused taps (k * D channels), not one date's D
        self.neck = PyramidNeck(FUSIONS[fusion] * backbone.dim, channels)

    def features(self, pixels: torch.Tensor, meta: Metadata) -> torch.Tensor:
        """Both dates' tapped grids: ``[B, 2C, S, S] -> [B, 2, 4, D, S/P, S/P]``."""
        b, c2 = pixels.shape[:2]
        if c2 % 2:
            raise ValueError(f"a change model takes 2C channels (before, after), got {c2}")
        c = c2 // 2
        stacked = torch.cat((pixels[:, :c], pixels[:, c:]), dim=0)  # [2B, C, S, S]
        grids = torch.stack(self.backbone.forward_grids(stacked, split_meta(meta, b)), dim=1)
        return torch.stack((grids[:b], grids[b:]), dim=1)

    def decode(self, features: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """Fuse and decode ``[B, 2, 4, D, h, w]`` -> ``[B, K, *out_size]``."""
        taps = [fuse(features[:, 0, i], features[:, 1, i], self.fusion) for i in range(4)]
        return self.decoder(self.neck(taps), out_size)
