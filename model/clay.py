"""The Clay v1.5 masked autoencoder: encoder, decoder, loss and named size variants.

Architecture (equivalent to the reference ``claymodel`` 1.5.0):

- patches: wavelength-conditioned dynamic embedding, ``[B, C, H, W] -> [B, L, D]``
- encodings: 2-D sin-cos position encoding scaled by GSD on ``D - 8`` channels, concatenated
  with the 8 time/location values (week sin/cos, hour sin/cos, lat sin/cos, lon sin/cos)
- masking: a ratio of patches dropped (random order when ``shuffle``), a CLS token prepended
- encoder: pre-norm transformer; decoder: transformer and the dynamic embedding in reverse
- loss: L1 reconstruction on masked patches only (optionally on per-patch normalised pixels);
  optionally a view-consistency loss (two masked, rotated views of each chip agree on their
  pooled tokens against the batch's other chips: NT-Xent, as in masked siamese networks)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from clay_search.errors import BandMismatchError, ModelConfigError
from clay_search.model.dynamic_embedding import DynamicEmbedding
from clay_search.model.layers import Transformer, posemb_sincos_2d_with_gsd

WAVE_DIM = 128
NUM_LATENT_TOKENS = 128
META_DIM = 8  # time (4) + latlon (4)


@dataclass(frozen=True)
class ClayConfig:
    """Sizes of one Clay variant. Everything else (bands, GSD) comes with the input."""

    name: str
    dim: int
    depth: int
    heads: int
    dim_head: int
    mlp_ratio: float
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    decoder_dim_head: int
    decoder_mlp_ratio: float
    patch_size: int = 8

    def to_dict(self) -> dict:
        """A JSON-able dict of the config."""
        return asdict(self)

    def with_patch_size(self, patch_size: int) -> ClayConfig:
        """The same sizes with another patch size."""
        return replace(self, patch_size=patch_size)


def _variant(name: str, **sizes) -> ClayConfig:
    return ClayConfig(name=name, **sizes)


VARIANTS: dict[str, ClayConfig] = {
    cfg.name: cfg
    for cfg in (
        # CPU-sized variant trained by this project (see model/weights/MODEL_CARD.md)
        _variant(
            "nano",
            dim=128,
            depth=4,
            heads=4,
            dim_head=32,
            mlp_ratio=2,
            decoder_dim=64,
            decoder_depth=2,
            decoder_heads=2,
            decoder_dim_head=32,
            decoder_mlp_ratio=2,
        ),
        # Clay's own variants (claymodel 1.5.0)
        _variant(
            "tiny",
            dim=192,
            depth=6,
            heads=4,
            dim_head=48,
            mlp_ratio=2,
            decoder_dim=96,
            decoder_depth=3,
            decoder_heads=2,
            decoder_dim_head=48,
            decoder_mlp_ratio=2,
        ),
        _variant(
            "small",
            dim=384,
            depth=6,
            heads=6,
            dim_head=64,
            mlp_ratio=2,
            decoder_dim=192,
            decoder_depth=4,
            decoder_heads=4,
            decoder_dim_head=64,
            decoder_mlp_ratio=2,
        ),
        _variant(
            "base",
            dim=768,
            depth=12,
            heads=12,
            dim_head=64,
            mlp_ratio=4,
            decoder_dim=512,
            decoder_depth=4,
            decoder_heads=4,
            decoder_dim_head=64,
            decoder_mlp_ratio=4,
        ),
        _variant(
            "large",
            dim=1024,
            depth=24,
            heads=16,
            dim_head=64,
            mlp_ratio=4,
            decoder_dim=512,
            decoder_depth=4,
            decoder_heads=4,
            decoder_dim_head=64,
            decoder_mlp_ratio=4,
        ),
    )
}


def get_config(name: str, *, patch_size: int | None = None) -> ClayConfig:
    """The named variant (``nano``, ``tiny``, ``small``, ``base``, ``large``)."""
    try:
        cfg = VARIANTS[name]
    except KeyError:
        raise ModelConfigError(
            f"unknown model size {name!r}; choose one of {sorted(VARIANTS)}"
        ) from None
    return cfg if patch_size is None else cfg.with_patch_size(patch_size)


def metadata_encoding(
    num_patches: int, dim: int, time: torch.Tensor, latlon: torch.Tensor, gsd
) -> torch.Tensor:
    """Position (GSD-scaled) + time/location encoding for a square grid.  -> ``[B, L, dim]``."""
    grid = int(math.isqrt(num_patches))
    if grid * grid != num_patches:
        raise ModelConfigError(
            f"Clay needs a square patch grid, got {num_patches} patches: use square chips"
        )
    b = time.shape[0]
    pos = posemb_sincos_2d_with_gsd(grid, grid, dim - META_DIM, gsd).to(time.device)  # [L D-8]
    meta = torch.cat((time, latlon), dim=1).to(pos.dtype)  # [B 8]
    return torch.cat(
        (
            repeat(pos, "L D -> B L D", B=b),
            repeat(meta, "B D -> B L D", L=num_patches),
        ),
        dim=-1,
    )  # [B L D]


@dataclass
class MaskedTokens:
    """Output of the masked encoder pass."""

    tokens: torch.Tensor  # [B, 1 + L_kept, D], CLS first
    unmasked_indices: torch.Tensor  # [B, L_kept]
    masked_indices: torch.Tensor  # [B, L_masked]
    mask: torch.Tensor  # [B, L], 1 = masked


class ClayEncoder(nn.Module):
    """Clay encoder. ``encoder(pixels, *, time, latlon, gsd, waves) -> [B, 1 + L, D]``.

    ``pixels`` ``[B, C, H, W]`` normalised; ``time`` ``[B, 4]``; ``latlon`` ``[B, 4]``; ``gsd`` in
    metres (float or 0-d tensor); ``waves`` ``[C]`` central wavelengths in micrometres.
    With ``mask_ratio`` 0 (the default) every patch is kept, in order.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_ratio: float,
        patch_size: int = 8,
        mask_ratio: float = 0.0,
        shuffle: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.patch_size = patch_size
        self.mask_ratio = mask_ratio
        self.shuffle = shuffle
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.patch_embedding = DynamicEmbedding(
            wave_dim=WAVE_DIM,
            num_latent_tokens=NUM_LATENT_TOKENS,
            patch_size=patch_size,
            embed_dim=dim,
            is_decoder=False,
        )
        self.transformer = Transformer(dim, depth, heads, dim_head, int(dim * mlp_ratio))

    @classmethod
    def from_config(cls, cfg: ClayConfig, **kwargs) -> ClayEncoder:
        """Build the encoder of a :class:`ClayConfig`."""
        return cls(
            dim=cfg.dim,
            depth=cfg.depth,
            heads=cfg.heads,
            dim_head=cfg.dim_head,
            mlp_ratio=cfg.mlp_ratio,
            patch_size=cfg.patch_size,
            **kwargs,
        )

    # -- steps ---------------------------------------------------------------------------------
    def patchify(
        self,
        pixels: torch.Tensor,
        waves: torch.Tensor,
        patch_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Dynamic patch embedding.  ``[B, C, H, W] -> [B, L, D]``.

        ``patch_weights`` are the precomputed ``patch_embedding.generate(waves)`` (a cache).
        """
        _, c, h, w = pixels.shape
        if waves.numel() != c:
            raise BandMismatchError(
                f"pixels have {c} bands but {waves.numel()} wavelengths were given: "
                "give one wavelength per band"
            )
        if h % self.patch_size or w % self.patch_size:
            raise ModelConfigError(
                f"chip size {h}x{w} is not a multiple of the patch size {self.patch_size}: "
                f"use a chip size divisible by {self.patch_size}"
            )
        if patch_weights is None:
            patch_weights = self.patch_embedding.generate(waves.to(pixels.device))
        weight, bias = patch_weights
        return self.patch_embedding.project(pixels, weight.to(pixels.dtype), bias)

    def add_encodings(
        self, patches: torch.Tensor, time: torch.Tensor, latlon: torch.Tensor, gsd
    ) -> torch.Tensor:
        """Add position, time and location encodings.  ``[B, L, D] -> [B, L, D]``."""
        enc = metadata_encoding(patches.shape[1], self.dim, time, latlon, gsd)
        return patches + enc.to(patches.dtype)

    def mask_out(
        self,
        patches: torch.Tensor,
        mask_ratio: float,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Drop ``mask_ratio`` of the patches.

        Returns kept patches ``[B, L_kept, D]``, kept and masked indices, and the mask ``[B, L]``.
        """
        b, length, _ = patches.shape
        if shuffle:
            noise = torch.rand((b, length), device=patches.device, generator=generator)
        else:
            noise = torch.arange(length, device=patches.device).expand(b, length)
        order = torch.argsort(noise, dim=-1)  # [B L]
        n_masked = int(mask_ratio * length)
        masked_idx, kept_idx = order[:, :n_masked], order[:, n_masked:]
        mask = torch.zeros((b, length), device=patches.device)
        mask.scatter_(1, masked_idx, 1.0)
        batch = torch.arange(b, device=patches.device)[:, None]
        return patches[batch, kept_idx], kept_idx, masked_idx, mask

    # -- step by step (for backbones and profiling) ---------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks in order (each ``[B, N, D] -> [B, N, D]``)."""
        return self.transformer.layers

    @property
    def norm(self) -> nn.LayerNorm:
        """The final LayerNorm applied after the last block."""
        return self.transformer.norm

    def prepare_tokens(
        self,
        pixels: torch.Tensor,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd,
        waves: torch.Tensor,
        patch_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Patch embedding + encodings + CLS, every patch kept: the first block's input.

        ``[B, C, H, W] -> [B, 1 + L, D]``.
        """
        patches = self.add_encodings(self.patchify(pixels, waves, patch_weights), time, latlon, gsd)
        cls = self.cls_token.to(patches.dtype).expand(patches.shape[0], -1, -1)  # [B 1 D]
        return torch.cat((cls, patches), dim=1)

    def forward_intermediates(
        self,
        pixels: torch.Tensor,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd,
        waves: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        patch_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final tokens and the outputs of selected blocks (every patch kept, CLS first).

        ``indices``: block numbers (negative from the end), an int ``n`` for the last ``n``
        blocks, ``None`` for all. ``norm`` applies the final LayerNorm to the intermediates too.
        ``stop_early`` skips the blocks after the last selected one (the final tokens returned
        are then that block's output, unnormalised). Returns ``([B, 1+L, D], [[B, 1+L, D], ...])``.
        """
        depth = len(self.blocks)
        if indices is None:
            wanted = list(range(depth))
        elif isinstance(indices, int):
            wanted = list(range(depth - indices, depth))
        else:
            wanted = [i % depth if -depth <= i < depth else depth for i in indices]
        if any(not 0 <= i < depth for i in wanted):
            raise ModelConfigError(f"block indices {indices!r} out of range for {depth} blocks")
        x = self.prepare_tokens(
            pixels, time=time, latlon=latlon, gsd=gsd, waves=waves, patch_weights=patch_weights
        )
        last = max(wanted) if stop_early and wanted else depth - 1
        out = []
        for i, block in enumerate(self.blocks[: last + 1]):
            x = block(x)
            if i in wanted:
                out.append(self.norm(x) if norm else x)
        if last == depth - 1:
            x = self.norm(x)
        return x, out

    def encode_masked(
        self,
        pixels: torch.Tensor,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd,
        waves: torch.Tensor,
        mask_ratio: float | None = None,
        shuffle: bool | None = None,
        generator: torch.Generator | None = None,
        patch_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> MaskedTokens:
        """Patchify, encode metadata, mask, prepend CLS and run the transformer."""
        patches = self.patchify(pixels, waves, patch_weights)
        patches = self.add_encodings(patches, time, latlon, gsd)
        kept, kept_idx, masked_idx, mask = self.mask_out(
            patches,
            self.mask_ratio if mask_ratio is None else mask_ratio,
            shuffle=self.shuffle if shuffle is None else shuffle,
            generator=generator,
        )
        cls = self.cls_token.to(kept.dtype).expand(kept.shape[0], -1, -1)  # [B 1 D]
        tokens = self.transformer(torch.cat((cls, kept), dim=1))  # [B 1+L_kept D]
        return MaskedTokens(tokens, kept_idx, masked_idx, mask)

    def forward(
        self,
        pixels: torch.Tensor,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd,
        waves: torch.Tensor,
        patch_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Token embeddings ``[B, 1 + L_kept, D]``, CLS first (all patches when unmasked)."""
        if not self.mask_ratio:  # inference: no masking step, no index gathers
            x = self.prepare_tokens(
                pixels, time=time, latlon=latlon, gsd=gsd, waves=waves, patch_weights=patch_weights
            )
            return self.transformer(x)
        return self.encode_masked(
            pixels, time=time, latlon=latlon, gsd=gsd, waves=waves, patch_weights=patch_weights
        ).tokens


class ClayDecoder(nn.Module):
    """MAE decoder: fills masked positions, runs a small transformer, maps tokens to pixels.

    ``MaskedTokens -> [B, L, C*P*P]`` for the bands ``waves``.
    """

    def __init__(
        self,
        *,
        encoder_dim: int,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_ratio: float,
        patch_size: int = 8,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.patch_size = patch_size
        self.enc_to_dec = nn.Linear(encoder_dim, dim) if encoder_dim != dim else nn.Identity()
        self.mask_patch = nn.Parameter(torch.randn(dim))
        self.transformer = Transformer(dim, depth, heads, dim_head, int(dim * mlp_ratio))
        self.embed_to_pixels = DynamicEmbedding(
            wave_dim=WAVE_DIM,
            num_latent_tokens=NUM_LATENT_TOKENS,
            patch_size=patch_size,
            embed_dim=dim,
            is_decoder=True,
        )

    @classmethod
    def from_config(cls, cfg: ClayConfig) -> ClayDecoder:
        """Build the decoder of a :class:`ClayConfig`."""
        return cls(
            encoder_dim=cfg.dim,
            dim=cfg.decoder_dim,
            depth=cfg.decoder_depth,
            heads=cfg.decoder_heads,
            dim_head=cfg.decoder_dim_head,
            mlp_ratio=cfg.decoder_mlp_ratio,
            patch_size=cfg.patch_size,
        )

    def forward(
        self,
        enc: MaskedTokens,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd,
        waves,
        pixel_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``pixel_weights``: precomputed ``embed_to_pixels.generate(waves)`` (a cache)."""
        tokens = self.enc_to_dec(enc.tokens)  # [B 1+L_kept Dd]
        cls, kept = tokens[:, :1], tokens[:, 1:]
        b, length = enc.mask.shape
        meta = metadata_encoding(length, self.dim, time, latlon, gsd).to(kept.dtype)  # [B L Dd]
        batch = torch.arange(b, device=kept.device)[:, None]
        n_masked = enc.masked_indices.shape[1]
        masked = self.mask_patch.to(kept.dtype).expand(b, n_masked, -1)
        full = torch.zeros((b, length, self.dim), device=kept.device, dtype=kept.dtype)
        full[batch, enc.unmasked_indices] = kept + meta[batch, enc.unmasked_indices]
        full[batch, enc.masked_indices] = masked + meta[batch, enc.masked_indices]
        decoded = self.transformer(torch.cat((cls, full), dim=1))  # [B 1+L Dd]
        if pixel_weights is None:
            pixel_weights = self.embed_to_pixels.generate(waves.to(decoded.device))
        weight, bias = pixel_weights
        pixels = self.embed_to_pixels.project(decoded, weight.to(decoded.dtype), bias)
        return pixels[:, 1:]  # [B L C*P*P]


class ClayMAE(nn.Module):
    """Encoder + decoder + masked reconstruction loss (+ optional representation loss).

    The representation loss pulls ``proj(CLS)`` towards a frozen teacher's embedding of the RGB
    bands; it is used only when a teacher module is given (no hub downloads).
    """

    def __init__(
        self,
        cfg: ClayConfig,
        *,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        teacher: nn.Module | None = None,
        teacher_dim: int | None = None,
        view_loss: float = 0.0,
        view_temperature: float = 0.2,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.view_loss = view_loss
        self.view_temperature = view_temperature
        if view_loss > 0:
            # projector of the pooled tokens (mean + std: the chip vector's pooling)
            self.view_proj = nn.Sequential(
                nn.Linear(2 * cfg.dim, 256), nn.GELU(), nn.Linear(256, 128)
            )
        self.encoder = ClayEncoder.from_config(cfg, mask_ratio=mask_ratio, shuffle=True)
        self.decoder = ClayDecoder.from_config(cfg)
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad = False
            teacher.eval()
            self.proj = nn.Linear(cfg.dim, teacher_dim or cfg.dim)

    def reconstruction_loss(
        self, pixels: torch.Tensor, predicted: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean L1 over masked patches.  pixels ``[B,C,H,W]``, predicted ``[B,L,C*P*P]``."""
        p = self.cfg.patch_size
        target = rearrange(pixels, "B C (h p1) (w p2) -> B (h w) (C p1 p2)", p1=p, p2=p)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = F.l1_loss(predicted.float(), target.float(), reduction="none").mean(dim=-1)
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    def consistency_loss(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """NT-Xent between two views' patch tokens, each chip's other view its one positive.

        ``first``, ``second`` ``[B, 1 + L_kept, D]`` (CLS first, ignored): pooled as mean + std
        of the patch tokens, projected, compared by cosine at ``view_temperature``.
        """
        z = [
            F.normalize(self.view_proj(torch.cat((t[:, 1:].mean(1), t[:, 1:].std(1)), -1)), dim=-1)
            for t in (first.float(), second.float())
        ]
        b = z[0].shape[0]
        both = torch.cat(z, 0)  # [2B, 128]
        sim = both @ both.T / self.view_temperature
        sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=sim.device), float("-inf"))
        target = torch.cat((torch.arange(b, 2 * b), torch.arange(0, b))).to(sim.device)
        return F.cross_entropy(sim, target)

    def forward(
        self,
        pixels: torch.Tensor,
        *,
        time: torch.Tensor,
        latlon: torch.Tensor,
        gsd,
        waves: torch.Tensor,
        target_pixels: torch.Tensor | None = None,
        rgb_indices: list[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for one batch of a single sensor.

        ``target_pixels`` defaults to ``pixels`` (pass the undropped pixels when bands were
        dropped as augmentation).
        """
        enc = self.encoder.encode_masked(
            pixels, time=time, latlon=latlon, gsd=gsd, waves=waves, generator=generator
        )
        predicted = self.decoder(enc, time=time, latlon=latlon, gsd=gsd, waves=waves)
        target = pixels if target_pixels is None else target_pixels
        rec = self.reconstruction_loss(target, predicted, enc.mask)
        out = {"loss": rec, "reconstruction_loss": rec}
        if self.teacher is not None and rgb_indices is not None:
            with torch.no_grad():
                teacher_emb = self.teacher(target[:, rgb_indices])
            rep = 1.0 - F.cosine_similarity(self.proj(enc.tokens[:, 0]), teacher_emb).mean()
            out["representation_loss"] = rep
            out["loss"] = 0.9 * rec + 0.1 * rep
        if self.view_loss > 0 and pixels.shape[0] > 1:
            # the second view: the chips turned by a random quarter turn, another random mask
            k = int(torch.randint(4, (1,), generator=generator).item())
            other = self.encoder.encode_masked(
                torch.rot90(target, k, dims=(2, 3)),  # all bands: band dropping is a view too
                time=time,
                latlon=latlon,
                gsd=gsd,
                waves=waves,
                generator=generator,
            )
            view = self.consistency_loss(enc.tokens, other.tokens)
            out["view_loss"] = view
            out["loss"] = out["loss"] + self.view_loss * view
        return out
