"""Loading and saving encoder weights, safely.

Two formats are read:

- the project's own weights: ``model.safetensors`` + ``config.json`` (model sizes, sensors,
  weights hash = model id), written by :func:`save_weights`;
- an official Clay Lightning checkpoint (``clay-v1.5.ckpt``): keys ``model.encoder.*`` are used,
  teacher, decoder and projection are ignored, the size is inferred from tensor shapes. It is
  read with ``torch.load(weights_only=True)``: no arbitrary objects are ever unpickled.

Nothing is downloaded here: a missing file is a :class:`CheckpointNotFoundError` that says where
weights come from. A known checkpoint's name (``clay-v1.5``, see ``model/registry.py``) stands for
its file in the weights cache, which ``clay-search weights fetch NAME`` fills.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clay_search.errors import CheckpointError, CheckpointNotFoundError
from clay_search.model.clay import VARIANTS, ClayConfig, ClayDecoder, ClayEncoder
from clay_search.model.registry import resolve_weights

WEIGHTS_FORMAT = "clay-search-weights"
ENCODER_PREFIX = "model.encoder."
DECODER_PREFIX = "model.decoder."
#: The decoder file beside clay-search weights made before train() saved the decoder.
DECODER_FILE = "decoder.safetensors"
DECODER_FORMAT = "clay-search-decoder"


@dataclass(frozen=True)
class WeightsInfo:
    """Where an encoder's weights came from and what they are."""

    model_id: str
    config: ClayConfig
    path: str
    format: str  # "clay-search" | "clay-lightning"
    sensors: str = "default"
    pooling: str = "cls"  # the chip embedding these weights recommend (see Embedder)
    #: per-feature mean/std of the pooled embedding over the training data, by pooling name:
    #: ``{"mean+std": {"mean": [...], "std": [...], "data": "..."}}``; the Embedder standardises
    #: chip vectors with them (part of the model id)
    embedding_stats: dict | None = None


def bundled_weights_dir() -> Path:
    """The folder of the weights shipped in the package (``model/weights``)."""
    return Path(str(resources.files("clay_search.model").joinpath("weights")))


def _tensor_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.float().numpy().tobytes())
    return h.hexdigest()


def make_model_id(cfg: ClayConfig, weights_hash: str) -> str:
    """Model id: variant, patch size and a hash of the weights."""
    return f"clay-{cfg.name}-p{cfg.patch_size}-{weights_hash[:12]}"


def infer_config(state: dict[str, torch.Tensor]) -> ClayConfig:
    """Infer the encoder sizes from an encoder state dict (keys without prefix)."""
    try:
        dim = state["cls_token"].shape[-1]
        out_dim = state["patch_embedding.weight_generator.fc_weight.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"not a Clay encoder state dict: missing key {e}") from None
    patch_size = int(round((out_dim / dim) ** 0.5))
    layer_ids = {
        int(m.group(1)) for k in state if (m := re.match(r"transformer\.layers\.(\d+)\.", k))
    }
    depth = len(layer_ids)
    inner = state["transformer.layers.0.0.to_qkv.weight"].shape[0] // 3
    mlp_dim = state["transformer.layers.0.1.net.1.weight"].shape[0]
    for cfg in VARIANTS.values():
        same_attention = cfg.dim == dim and cfg.depth == depth and cfg.heads * cfg.dim_head == inner
        if same_attention and int(cfg.dim * cfg.mlp_ratio) == mlp_dim:
            return cfg.with_patch_size(patch_size)
    dim_head = 64 if inner % 64 == 0 else inner
    return ClayConfig(
        name=f"custom{dim}x{depth}",
        dim=dim,
        depth=depth,
        heads=inner // dim_head,
        dim_head=dim_head,
        mlp_ratio=mlp_dim / dim,
        decoder_dim=dim,
        decoder_depth=1,
        decoder_heads=1,
        decoder_dim_head=dim,
        decoder_mlp_ratio=1,
        patch_size=patch_size,
    )


def _load_state_into(encoder: ClayEncoder, state: dict[str, torch.Tensor], path: Path) -> None:
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(
                f"unexpected keys {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else "")
            )
        if wrong:
            parts.append(f"shape mismatches {wrong[:5]}" + (" ..." if len(wrong) > 5 else ""))
        raise CheckpointError(
            f"weights in {path} do not fit the Clay encoder: {'; '.join(parts)}. "
            "Check the file is a Clay v1.5 encoder checkpoint or clay-search weights folder."
        )
    encoder.load_state_dict(state, strict=True)


def _read_config(path: Path) -> dict:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"weights config {path} is not valid JSON: {e}") from None
    if cfg.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(
            f"{path} is not a clay-search weights config (format {cfg.get('format')!r}, "
            f"expected {WEIGHTS_FORMAT!r})"
        )
    return cfg


def _load_own(path: Path) -> tuple[ClayEncoder, WeightsInfo]:
    if path.is_dir():
        cfg_path, st_path = path / "config.json", path / "model.safetensors"
    elif path.suffix == ".json":
        cfg_path = path
        st_path = path.parent / _read_config(path).get("weights", "model.safetensors")
    else:
        st_path, cfg_path = path, path.with_suffix(".json")
        if not cfg_path.exists():
            cfg_path = path.parent / "config.json"
    for p in (cfg_path, st_path):
        if not p.exists():
            raise CheckpointNotFoundError(
                f"{p} not found: clay-search weights are a folder with config.json and "
                "model.safetensors (written by `clay-search train`)"
            )
    meta = _read_config(cfg_path)
    try:
        cfg = ClayConfig(**meta["model"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{cfg_path} has no valid 'model' section: {e!r}") from None
    try:
        state = load_file(str(st_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{st_path} is not a readable safetensors file: {e}") from None
    state = {
        k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")
    } or state
    encoder = ClayEncoder.from_config(cfg)
    _load_state_into(encoder, state, st_path)
    model_id = meta.get("model_id") or make_model_id(cfg, _tensor_hash(state))
    info = WeightsInfo(
        model_id,
        cfg,
        str(path),
        "clay-search",
        meta.get("sensors", "default"),
        meta.get("pooling", "cls"),
        meta.get("embedding_stats"),
    )
    return encoder, info


def _load_lightning(path: Path, size: str | None) -> tuple[ClayEncoder, WeightsInfo]:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (not a torch zip archive); expected a "
            "Clay .ckpt or a clay-search weights folder"
        )
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e) and "Unsupported operand" not in str(e):
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]})"
            ) from None
        raise CheckpointError(
            f"{path} holds Python objects beyond tensors and plain values, which clay-search "
            f"refuses to unpickle ({str(e).splitlines()[0]}). Re-save its state_dict only."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, IndexError, KeyError) as e:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); expected a Clay .ckpt or a "
            "clay-search weights folder"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} does not contain a state dict")
    sd = ckpt.get("state_dict", ckpt)
    state = {k[len(ENCODER_PREFIX) :]: v for k, v in sd.items() if k.startswith(ENCODER_PREFIX)}
    if not state:
        state = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    if not state:
        raise CheckpointError(
            f"{path} has no 'model.encoder.*' keys (first keys: {list(sd)[:5]}); "
            "is it a Clay checkpoint?"
        )
    cfg = infer_config(state)
    if size is not None:
        cfg = VARIANTS[size].with_patch_size(cfg.patch_size)
    else:
        hp_size = (ckpt.get("hyper_parameters") or {}).get("model_size")
        if isinstance(hp_size, str) and hp_size in VARIANTS:
            cfg = VARIANTS[hp_size].with_patch_size(cfg.patch_size)
    encoder = ClayEncoder.from_config(cfg)
    _load_state_into(encoder, state, path)
    info = WeightsInfo(make_model_id(cfg, _tensor_hash(state)), cfg, str(path), "clay-lightning")
    return encoder, info


def load_encoder(
    path: str | Path | None = None, *, size: str | None = None
) -> tuple[ClayEncoder, WeightsInfo]:
    """Load an encoder and describe it. ``path=None`` loads the weights shipped in the package.

    Accepts a clay-search weights folder (or its ``.safetensors``/``config.json``), an
    official Clay Lightning ``.ckpt``, or a known checkpoint's name once fetched. ``size``
    overrides the inferred variant for checkpoints.
    Returns the encoder in eval mode and a :class:`WeightsInfo` (``model_id`` among it).
    """
    path = bundled_weights_dir() if path is None else resolve_weights(path) or Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"weights {path} not found: pass the path to a local file (an official Clay "
            "checkpoint such as clay-v1.5.ckpt, or a weights folder made by `clay-search train`), "
            "or a known name such as clay-v1.5 after `clay-search weights fetch clay-v1.5`."
        )
    if path.is_dir() or path.suffix in {".safetensors", ".json"}:
        encoder, info = _load_own(path)
    else:
        encoder, info = _load_lightning(path, size)
    encoder.eval()
    return encoder, info


def save_weights(
    encoder: ClayEncoder,
    cfg: ClayConfig,
    out_dir: str | Path,
    *,
    extra: dict | None = None,
    decoder_state: dict[str, torch.Tensor] | None = None,
) -> WeightsInfo:
    """Write ``model.safetensors`` + ``config.json`` into ``out_dir`` and return the info."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    weights_hash = _tensor_hash(state)
    tensors = {f"encoder.{k}": v for k, v in state.items()}
    if decoder_state:
        tensors.update(
            {f"decoder.{k}": v.detach().cpu().contiguous() for k, v in decoder_state.items()}
        )
    save_file(tensors, str(out / "model.safetensors"))
    model_id = make_model_id(cfg, weights_hash)
    meta = {
        "format": WEIGHTS_FORMAT,
        "version": 1,
        "model": cfg.to_dict(),
        "weights": "model.safetensors",
        "weights_sha256": weights_hash,
        "model_id": model_id,
        "sensors": "default",
        **(extra or {}),
    }
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return WeightsInfo(model_id, cfg, str(out), "clay-search")


# -- the MAE decoder (for the reconstruction quality score) --------------------------------------
def save_decoder(
    decoder: ClayDecoder, info: WeightsInfo, out: str | Path, *, meta: dict | None = None
) -> Path:
    """Write a decoder trained for the encoder ``info`` to ``out`` (a ``decoder.safetensors``).

    The file's metadata names the encoder's ``model_id``: :func:`load_decoder` refuses a decoder
    made for other weights.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = decoder.state_dict()
    tensors = {f"decoder.{k}": v.detach().cpu().contiguous() for k, v in state.items()}
    header = {
        "format": DECODER_FORMAT,
        "encoder_model_id": info.model_id,
        "meta": json.dumps(meta or {}),
    }
    save_file(tensors, str(out), metadata=header)
    return out


def _decoder_from_state(
    state: dict[str, torch.Tensor], cfg: ClayConfig, where: str
) -> tuple[ClayDecoder | None, str]:
    decoder = ClayDecoder.from_config(cfg)
    own = decoder.state_dict()
    if set(own) != set(state) or any(tuple(own[k].shape) != tuple(state[k].shape) for k in own):
        return None, (
            f"the decoder in {where} does not fit the {cfg.name} decoder layout "
            "(keys or shapes differ): no quality score"
        )
    decoder.load_state_dict(state, strict=True)
    return decoder.eval(), f"decoder from {where}"


def load_decoder(info: WeightsInfo) -> tuple[ClayDecoder | None, str]:
    """The MAE decoder that goes with the encoder ``info``, or ``None``, and a note saying which.

    Looked for in: clay-search weights' own file (``decoder.*`` keys, written by
    :func:`~clay_search.model.train.train`), a ``decoder.safetensors`` beside them made for the
    same encoder (:func:`save_decoder`), or a Clay Lightning checkpoint's ``model.decoder.*``
    keys. Weights without a decoder give ``(None, why)``: the quality score is then null.
    """
    path = Path(info.path)
    if info.format == "clay-lightning":
        try:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - the encoder loaded; the decoder is optional
            return None, f"could not read the decoder of {path.name}: {e}"
        sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
        state = {k[len(DECODER_PREFIX) :]: v for k, v in sd.items() if k.startswith(DECODER_PREFIX)}
        if not state:
            return None, (
                f"{path.name} holds no decoder (no 'model.decoder.*' keys): no quality score"
            )
        return _decoder_from_state(state, info.config, path.name)
    folder = path if path.is_dir() else path.parent
    st_path = folder / "model.safetensors" if path.is_dir() else path
    if st_path.suffix == ".json":
        st_path = folder / "model.safetensors"
    if st_path.exists():
        try:
            state = load_file(str(st_path))
        except (SafetensorError, OSError, ValueError):
            state = {}
        dec = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
        if dec:
            return _decoder_from_state(dec, info.config, st_path.name)
    side = folder / DECODER_FILE
    if not side.exists():
        return None, f"the weights in {folder} ship no decoder: no quality score"
    try:
        from safetensors import safe_open

        with safe_open(str(side), "pt") as f:
            header = f.metadata() or {}
        state = load_file(str(side))
    except (SafetensorError, OSError, ValueError) as e:
        return None, f"{side} is not a readable safetensors file ({e}): no quality score"
    if header.get("encoder_model_id") != info.model_id:
        return None, (
            f"{side} was trained for encoder {header.get('encoder_model_id')!r}, not "
            f"{info.model_id!r}: no quality score"
        )
    dec = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
    return _decoder_from_state(dec, info.config, side.name)
