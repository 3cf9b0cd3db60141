"""Reusable transformer blocks and sin-cos encodings for the Clay model.

Parameter names follow the reference implementation (``norm``, ``to_qkv``, ``to_out``, ``net``) so
official checkpoints load without renaming.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from clay_search.errors import ModelConfigError


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear -> GELU -> Linear.  ``[B, N, D] -> [B, N, D]``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with fused scaled-dot-product attention.

    ``[B, N, D] -> [B, N, D]``; no biases on the projections, as in Clay.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        inner_dim = dim_head * heads
        self.heads = heads
        self.dim_head = dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        self.to_out = nn.Linear(inner_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        # [B N 3*H*d] -> [3 B H N d]: one view + permute, then one copy: the CPU flash kernel
        # runs 4-8 % faster on contiguous q/k/v at Clay's head sizes than on the strided views,
        # copy included (docs/benchmarks.md); the same arithmetic
        qkv = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        qkv = qkv.contiguous()
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=0.0)
        x = x.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)  # [B N H*d]
        return self.to_out(x)


class Block(nn.ModuleList):
    """Pre-norm residual block: ``x + attn(x)``, then ``x + mlp(x)``.  ``[B, N, D] -> [B, N, D]``.

    A two-item ``ModuleList`` (``[Attention, FeedForward]``) so parameter names stay those of the
    reference (``layers.<i>.0.*``, ``layers.<i>.1.*``) and official checkpoints load as they are.
    Without autograd the residual sums are done in place (no extra ``[B, N, D]`` buffers; the
    same additions, so the same numbers).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__(
            [Attention(dim, heads=heads, dim_head=dim_head), FeedForward(dim, mlp_dim)]
        )

    @property
    def attn(self) -> Attention:
        return cast(Attention, self[0])  # the first module, built above

    @property
    def mlp(self) -> FeedForward:
        return cast(FeedForward, self[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, ff = self[0], self[1]
        if torch.is_grad_enabled():
            x = attn(x) + x
            return ff(x) + x
        y = attn(x)
        y += x
        z = ff(y)
        z += y
        return z


class Transformer(nn.Module):
    """A stack of pre-norm :class:`Block` s (``layers``) and a final LayerNorm (``norm``)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(Block(dim, heads, dim_head, mlp_dim) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return self.norm(x)


def posemb_sincos_2d_with_gsd(
    h: int, w: int, dim: int, gsd: float | torch.Tensor = 1.0, temperature: int = 10000
) -> torch.Tensor:
    """2-D sin-cos position encoding with frequencies scaled by the ground sample distance.

    Returns ``[h*w, dim]`` (float32), laid out as (x.sin, x.cos, y.sin, y.cos), exactly as Clay.
    """
    if dim % 4:
        raise ModelConfigError(f"position encoding needs a dimension divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    gsd = torch.as_tensor(gsd, dtype=torch.float32)
    omega = torch.arange(dim // 4) / (dim // 4 - 1)
    omega = 1.0 / (temperature ** (2 * omega / dim)) * (gsd / 1.0)
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).float()


def posemb_sincos_1d(waves: torch.Tensor, dim: int, temperature: int = 10000) -> torch.Tensor:
    """1-D sin-cos encoding of values (here: central wavelengths in um).  ``[C] -> [C, dim]``."""
    if dim % 2:
        raise ModelConfigError(f"sin-cos encoding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, device=waves.device) / (dim // 2 - 1)
    omega = 1.0 / (temperature**omega)
    scaled = waves[:, None] * omega[None, :]
    return torch.cat((scaled.sin(), scaled.cos()), dim=1).float()
