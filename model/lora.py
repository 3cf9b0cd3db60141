"""Low-rank adapters (LoRA, Hu et al. 2021) on the encoder's linear layers.

A :class:`LoRALinear` is an ``nn.Linear`` (same ``weight`` parameter, so checkpoint keys are
unchanged) plus two small matrices: ``y = x W^T + (alpha / r) * drop(x) A^T B^T`` with
``A`` ``[r, in]`` (Kaiming-uniform) and ``B`` ``[out, r]`` (zeros), so a new adapter leaves
the layer's output exactly as it was. Only ``A`` and ``B`` train; the base weight is frozen.

:func:`apply_lora` puts adapters on the attention ``to_qkv`` and ``to_out`` projections of the
encoder blocks (``targets=("qkv", "proj")``; add ``"mlp"`` for the two feed-forward linears).
:func:`merge_lora` folds ``(alpha / r) B A`` into the weight (inference at the base model's
cost) and :func:`unmerge_lora` takes it out again. :func:`lora_state_dict` is what a head folder
stores (the adapters only), and :func:`base_fingerprint` the SHA-256 of the adapted base weights,
checked when the adapters are loaded back onto a base encoder.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clay_search.model.clay import ClayEncoder

TARGETS = ("qkv", "proj", "mlp")


@dataclass
class LoRAConfig:
    """Adapter settings: ``rank`` r, ``alpha`` (scale = alpha / r; default alpha = r),
    ``dropout`` on the adapter's input, ``targets`` (subset of ``qkv``, ``proj``, ``mlp``) and
    ``blocks`` (block indices; ``None`` = every block)."""

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv", "proj")
    blocks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        self.targets = tuple(self.targets)
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ValueError(f"LoRA targets {bad or '(none)'}: choose from {', '.join(TARGETS)}")
        if self.blocks is not None:
            self.blocks = tuple(int(b) for b in self.blocks)

    @property
    def scale(self) -> float:
        """alpha / rank."""
        return float(self.alpha if self.alpha is not None else self.rank) / self.rank

    def to_dict(self) -> dict:
        """JSON-able form (what ``head.json`` records)."""
        d = asdict(self)
        d["targets"] = list(self.targets)
        d["blocks"] = list(self.blocks) if self.blocks is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LoRAConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            rank=int(d["rank"]),
            alpha=d.get("alpha"),
            dropout=float(d.get("dropout", 0.0)),
            targets=tuple(d.get("targets", ("qkv", "proj"))),
            blocks=tuple(d["blocks"]) if d.get("blocks") is not None else None,
        )


class LoRALinear(nn.Linear):
    """``nn.Linear`` with a low-rank adapter.  ``[..., in] -> [..., out]``.

    Built from an existing linear with :meth:`from_linear` (the base ``weight``/``bias``
    parameters are shared, not copied). ``merged``: whether the adapter is folded into
    ``weight``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rank: int,
        scale: float,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank = rank
        self.scale = scale
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, *, rank: int, scale: float, dropout: float = 0.0
    ) -> LoRALinear:
        """Wrap ``linear`` (its parameters are reused; the adapter starts at zero)."""
        new = cls(
            linear.in_features,
            linear.out_features,
            rank=rank,
            scale=scale,
            dropout=dropout,
            bias=linear.bias is not None,
        )
        new.weight = linear.weight
        if linear.bias is not None:
            new.bias = linear.bias
        new.to(device=linear.weight.device)
        new.lora_a.data = new.lora_a.data.to(linear.weight.dtype)
        new.lora_b.data = new.lora_b.data.to(linear.weight.dtype)
        return new

    def delta(self) -> torch.Tensor:
        """The adapter as a weight update ``[out, in]``: ``scale * B @ A``."""
        return (self.lora_b @ self.lora_a) * self.scale

    def merge(self) -> None:
        """Fold the adapter into ``weight`` (no-op when merged)."""
        if not self.merged:
            with torch.no_grad():
                self.weight += self.delta().to(self.weight.dtype)
            self.merged = True

    def unmerge(self) -> None:
        """Take the adapter out of ``weight`` again (no-op when not merged)."""
        if self.merged:
            with torch.no_grad():
                self.weight -= self.delta().to(self.weight.dtype)
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        return out + F.linear(F.linear(self.lora_drop(x), self.lora_a), self.lora_b) * self.scale

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}, merged={self.merged}"
        )


def _sites(encoder: ClayEncoder, cfg: LoRAConfig) -> Iterator[tuple[str, nn.Module, str]]:
    """(qualified name, parent module, attribute) of every linear ``cfg`` adapts."""
    layers = encoder.transformer.layers
    blocks = range(len(layers)) if cfg.blocks is None else cfg.blocks
    for i in blocks:
        if not 0 <= i < len(layers):
            raise ValueError(f"LoRA block {i} outside the encoder's {len(layers)} blocks")
        attn, ff = layers[i][0], layers[i][1]
        pre = f"transformer.layers.{i}"
        if "qkv" in cfg.targets:
            yield f"{pre}.0.to_qkv", attn, "to_qkv"
        if "proj" in cfg.targets:
            yield f"{pre}.0.to_out", attn, "to_out"
        if "mlp" in cfg.targets:
            yield f"{pre}.1.net.1", ff.net, "1"
            yield f"{pre}.1.net.3", ff.net, "3"


def apply_lora(encoder: ClayEncoder, cfg: LoRAConfig) -> list[str]:
    """Replace the targeted linears of ``encoder`` by :class:`LoRALinear` (in place) and
    freeze every other encoder parameter. Returns the adapted layers' names."""
    names = []
    for name, parent, attr in list(_sites(encoder, cfg)):
        lin = getattr(parent, attr)
        if isinstance(lin, LoRALinear):
            raise ValueError(f"{name} already has a LoRA adapter")
        setattr(
            parent,
            attr,
            LoRALinear.from_linear(lin, rank=cfg.rank, scale=cfg.scale, dropout=cfg.dropout),
        )
        names.append(name)
    set_lora_trainable(encoder)
    return names


def lora_layers(module: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """The adapted layers of ``module`` with their names."""
    for name, m in module.named_modules():
        if isinstance(m, LoRALinear):
            yield name, m


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds any adapter."""
    return next(lora_layers(module), None) is not None


def set_lora_trainable(module: nn.Module) -> None:
    """Only the adapters take gradients; every other parameter of ``module`` is frozen."""
    for name, p in module.named_parameters():
        p.requires_grad = name.endswith(("lora_a", "lora_b"))


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (``A`` and ``B`` of every adapted layer)."""
    return [p for _, m in lora_layers(module) for p in (m.lora_a, m.lora_b)]


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter tensors only, keyed ``<layer>.lora_a``/``.lora_b`` (copies, on the CPU)."""
    if any(m.merged for _, m in lora_layers(module)):
        raise ValueError("unmerge the adapters before saving them (merge_lora changed weight)")
    out = {}
    for name, m in lora_layers(module):
        out[f"{name}.lora_a"] = m.lora_a.detach().cpu().clone()
        out[f"{name}.lora_b"] = m.lora_b.detach().cpu().clone()
    return out


def load_lora_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`lora_state_dict` tensors; every adapter must be given with its shape."""
    own = {f"{n}.{k}": getattr(m, k) for n, m in lora_layers(module) for k in ("lora_a", "lora_b")}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"adapter tensors do not fit: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for k, p in own.items():
        if tuple(state[k].shape) != tuple(p.shape):
            raise ValueError(
                f"adapter {k}: shape {tuple(state[k].shape)}, expected {tuple(p.shape)}"
            )
        with torch.no_grad():
            p.copy_(state[k])


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its weight; returns how many layers were merged."""
    layers = [m for _, m in lora_layers(module)]
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(module: nn.Module) -> int:
    """Undo :func:`merge_lora`; returns how many layers were unmerged."""
    layers = [m for _, m in lora_layers(module)]
    for m in layers:
        m.unmerge()
    return len(layers)


def base_fingerprint(encoder: nn.Module, cfg: LoRAConfig) -> str:
    """SHA-256 of the base weights of the layers ``cfg`` adapts (float32 bytes, in order).

    Taken from an unmerged encoder; adapters saved with it load only onto the same weights.
    """
    h = hashlib.sha256()
    for name, parent, attr in _sites(encoder, cfg):  # type: ignore[arg-type]
        lin = getattr(parent, attr)
        if isinstance(lin, LoRALinear) and lin.merged:
            raise ValueError("unmerge the adapters before fingerprinting the base weights")
        h.update(name.encode())
        h.update(lin.weight.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def count_parameters(module: nn.Module) -> dict[str, int]:
    """``{"adapter", "trainable", "total"}``: parameter counts of ``module``."""
    return {
        "adapter": sum(p.numel() for p in lora_parameters(module)),
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in module.parameters()),
    }
