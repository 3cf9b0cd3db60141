"""Wavelength-conditioned dynamic patch embedding (DOFA-style), as in Clay v1.5.

A small transformer turns the bands' central wavelengths into the weights of the patch
projection, so one model takes any set of bands. The decoder uses the same module in reverse to
map tokens back to pixels of the requested bands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from clay_search.model.layers import posemb_sincos_1d


class FCBlock(nn.Module):
    """Residual two-layer GELU MLP used on the wavelength encodings."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(size, size)
        self.l2 = nn.Linear(size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.l1(x))
        y = F.gelu(self.l2(y))
        return x + y


class WavesTransformer(nn.Module):
    """Generates per-band projection weights (and the bias) from wavelength tokens.

    ``[C, wave_dim] -> ([C, P*P*D], [D] | None)``
    """

    def __init__(
        self,
        wave_dim: int,
        output_dim: int,
        num_latent_tokens: int,
        embed_dim: int,
        is_decoder: bool,
        num_heads: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.num_latent_tokens = num_latent_tokens
        self.is_decoder = is_decoder
        layer = nn.TransformerEncoderLayer(
            d_model=wave_dim,
            nhead=num_heads,
            activation="gelu",
            dropout=0,
            norm_first=False,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, output_dim)
        self.fc_bias = None if is_decoder else nn.Linear(wave_dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.randn(num_latent_tokens, wave_dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, wave_dim) * 0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.cat([self.weight_tokens, x, self.bias_token], dim=0)  # [T+C+1, wave_dim]
        out = self.encoder(x)
        n = self.num_latent_tokens
        weights = self.fc_weight(out[n:-1] + x[n:-1])  # [C, P*P*D]
        bias = None if self.fc_bias is None else self.fc_bias(out[-1])  # [D]; None: decoder
        return weights, bias


class DynamicEmbedding(nn.Module):
    """Patch embedding (encoder) or pixel head (decoder) whose weights depend on wavelengths.

    Encoder: ``[B, C, H, W] -> [B, L, D]``. Decoder: ``[B, N, D] -> [B, N, C*P*P]``.
    """

    def __init__(
        self,
        wave_dim: int,
        num_latent_tokens: int,
        patch_size: int,
        embed_dim: int,
        is_decoder: bool = False,
    ) -> None:
        super().__init__()
        self.wave_dim = wave_dim
        self.num_latent_tokens = num_latent_tokens
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.is_decoder = is_decoder
        self.output_dim = patch_size**2 * embed_dim
        self.weight_generator = WavesTransformer(
            wave_dim, self.output_dim, num_latent_tokens, embed_dim, is_decoder
        )
        self.fclayer = FCBlock(wave_dim)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def generate(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projection weight and bias for the wavelengths ``waves`` ``[C]`` (um).

        Encoder weight ``[D, C, P, P]``, decoder weight ``[C*P*P, D]``; both already scaled by
        0.02 as the reference does. Depends only on the wavelengths, so callers may cache it.
        """
        enc = self.fclayer(posemb_sincos_1d(waves, self.wave_dim))
        weight, bias = self.weight_generator(enc)
        p = self.patch_size
        if self.is_decoder:
            weight = rearrange(weight, "cin (k1 k2 cout) -> (cin k1 k2) cout", k1=p, k2=p)
        else:
            weight = rearrange(weight, "cin (cout k1 k2) -> cout cin k1 k2", k1=p, k2=p)
        return weight * 0.02, bias

    def project(
        self, batch: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Apply weights from :meth:`generate` to pixels (encoder) or tokens (decoder)."""
        if self.is_decoder:
            return F.linear(batch, weight, bias=bias)  # [B N C*P*P]
        out = F.conv2d(batch, weight, bias=bias, stride=self.patch_size)  # [B D h w]
        return out.flatten(2).transpose(1, 2)  # [B L D]

    def forward(self, batch: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        weight, bias = self.generate(waves.to(batch.device))
        return self.project(batch, weight, bias)
