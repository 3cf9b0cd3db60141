"""Per-chip quality score: the MAE's reconstruction error of a chip, made deterministic.

A chip the model reconstructs badly is one unlike what it learnt from: clouds, haze, stripes,
saturated or broken pixels, or simply an unusual scene. The score is the model's own training
loss (L1 on masked patches, in normalised units) computed under fixed masks:

- the ``L`` patches are split into ``n = round(1 / (1 - mask_ratio))`` disjoint groups by a
  permutation drawn from a fixed seed (it depends only on ``L`` and the seed, never on the
  chip, the batch or the global RNG);
- pass ``g`` keeps group ``g`` visible and masks the rest (the training mask ratio, 0.75 -> 4
  passes of 25 % visible), exactly as in pretraining; the decoder predicts every masked patch;
- a patch's error is the mean L1 over its bands and pixels, averaged over the ``n - 1`` passes
  in which it was masked; the chip's score is the mean over patches, weighted by the share of
  valid (not nodata) pixels in each patch. A chip with no valid pixel scores NaN.

So every patch is scored (``patch_errors`` ``[B, L]`` are returned too), the same chip always gets
the same score (the encoder and decoder run in fp32 in eval mode, whatever precision embeds),
and a chip's score does not depend on the other chips of its batch.

Cost: ``n`` encoder passes over a quarter of the tokens plus ``n`` decoder passes over all of them,
on top of the (unmasked) embedding pass; measured in ``bench/quality_score.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from clay_search.model.clay import ClayDecoder, ClayEncoder, MaskedTokens

#: The mask ratio of Clay's pretraining (and of the shipped weights).
DEFAULT_MASK_RATIO = 0.75
#: Seed of the fixed patch partition.
DEFAULT_SEED = 0


def mask_groups(length: int, mask_ratio: float = DEFAULT_MASK_RATIO, seed: int = DEFAULT_SEED):
    """The kept-patch groups: ``n`` disjoint index tensors covering ``range(length)``.

    ``n = round(1 / (1 - mask_ratio))`` (at least 2); group sizes differ by at most one.
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1); got {mask_ratio}")
    n = max(2, min(length, round(1.0 / (1.0 - mask_ratio))))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(length, generator=gen)
    return [g.sort().values for g in torch.tensor_split(order, n)]


@dataclass
class ReconstructionScore:
    """Scores of one batch: ``score`` ``[B]`` (NaN where no pixel is valid), ``patch_errors``
    ``[B, L]`` (mean L1 of each patch over the passes masking it)."""

    score: np.ndarray
    patch_errors: np.ndarray


class ReconstructionScorer:
    """Deterministic masked-reconstruction error of chips with an encoder and its decoder.

    ``scorer.score(pixels, time=, latlon=, gsd=, waves=, valid=None) -> ReconstructionScore``;
    ``pixels`` ``[B, C, H, W]`` normalised as for embedding; ``valid`` ``[B, H, W]`` (or
    ``[B, 1|C, H, W]``) bool.
    """

    def __init__(
        self,
        encoder: ClayEncoder,
        decoder: ClayDecoder,
        *,
        mask_ratio: float = DEFAULT_MASK_RATIO,
        seed: int = DEFAULT_SEED,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder.eval()
        self.mask_ratio = mask_ratio
        self.seed = seed
        self._groups: dict[int, list[torch.Tensor]] = {}
        #: generated fp32 weights per band set: (encoder patch weights, decoder pixel weights)
        self._weights: dict[tuple[float, ...], tuple[tuple, tuple]] = {}

    def groups(self, length: int) -> list[torch.Tensor]:
        """The fixed kept-patch groups for ``length`` patches (cached)."""
        if length not in self._groups:
            self._groups[length] = mask_groups(length, self.mask_ratio, self.seed)
        return self._groups[length]

    def weights(self, waves: torch.Tensor) -> tuple[tuple, tuple]:
        """Encoder patch and decoder pixel weights for ``waves``, fp32 (cached per band set)."""
        key = tuple(round(float(w), 6) for w in waves.tolist())
        if key not in self._weights:
            if len(self._weights) >= 16:
                self._weights.clear()
            self._weights[key] = (
                self.encoder.patch_embedding.generate(waves),
                self.decoder.embed_to_pixels.generate(waves),
            )
        return self._weights[key]

    @torch.inference_mode()
    def score(
        self,
        pixels: torch.Tensor,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd: float,
        waves: torch.Tensor,
        valid: torch.Tensor | np.ndarray | None = None,
    ) -> ReconstructionScore:
        """Reconstruction error per chip and per patch (fp32)."""
        enc, dec = self.encoder, self.decoder
        x = pixels.float()
        device = x.device
        b, _c, h, w = x.shape
        p = enc.patch_size
        time, latlon = time.to(device).float(), latlon.to(device).float()
        waves = waves.to(device).float()
        (weight, bias), pixel_weights = self.weights(waves)  # [D, C, P, P], [D] | None
        target = rearrange(x, "B C (h p1) (w p2) -> B (h w) (C p1 p2)", p1=p, p2=p)
        # the patch embedding (a stride-P convolution) as one matrix product over the patches
        patches = torch.nn.functional.linear(target, weight.reshape(weight.shape[0], -1), bias)
        tokens = enc.add_encodings(patches, time, latlon, gsd)  # [B L D]
        length = tokens.shape[1]
        cls = enc.cls_token.float().expand(b, -1, -1)
        err_sum = torch.zeros((b, length), device=device)
        times_masked = torch.zeros(length, device=device)
        everything = torch.arange(length, device=device)
        for kept in self.groups(length):
            kept = kept.to(device)
            is_kept = torch.zeros(length, dtype=torch.bool, device=device)
            is_kept[kept] = True
            masked = everything[~is_kept]
            encoded = enc.transformer(torch.cat((cls, tokens[:, kept]), dim=1))
            mask = (~is_kept).float().expand(b, length)
            step = MaskedTokens(
                encoded, kept.expand(b, -1), masked.expand(b, -1), mask.contiguous()
            )
            predicted = dec(
                step, time=time, latlon=latlon, gsd=gsd, waves=waves, pixel_weights=pixel_weights
            )  # [B L C*P*P]
            err = (predicted.float() - target).abs().mean(dim=-1)  # [B L]
            err_sum += err * mask
            times_masked += (~is_kept).float()
        patch_err = err_sum / times_masked.clamp(min=1)  # [B L]
        if valid is None:
            weight = torch.ones((b, length), device=device)
        else:
            v = torch.as_tensor(np.asarray(valid) if not torch.is_tensor(valid) else valid)
            v = v.to(device).float().reshape(b, -1, h, w).mean(dim=1, keepdim=True)
            weight = rearrange(v, "B 1 (h p1) (w p2) -> B (h w) (p1 p2)", p1=p, p2=p).mean(-1)
        total = weight.sum(dim=1)
        score = (patch_err * weight).sum(dim=1) / total.clamp(min=1e-12)
        score = torch.where(total > 0, score, torch.full_like(score, math.nan))
        return ReconstructionScore(score.cpu().numpy(), patch_err.cpu().numpy())
