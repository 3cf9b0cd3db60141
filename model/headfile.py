"""The task head folder: ``head.json`` + ``head.safetensors``, loadable offline, never unpickled.

``head.json`` says everything needed to apply the head to new imagery::

    {"format": "clay-search-head", "version": 1,
     "task": "classify" | "multilabel" | "regress" | "segment" | "regress-pixel" | "change",
     "classes": [...] | null, "ignore_index": int | null,
     "sensor": "sentinel-2-l2a", "bands": ["blue", ...], "waves": [...],
     "normaliser": {"mean": [...], "std": [...], "transform": null, "stats_source": ...},
     "normalisation": {"stats": "auto", "record": "<digest>" | null, "decision": 1,
                       "record_config": {...} | null, "notes": [...]},
     "chip_size": 64, "gsd": 10.0 | null,
     "model": {"kind": "chip" | "dense" | "change", "num_outputs", "pooling", "head", "hidden",
               "channels", "fusion"},
     "backbone": {"model_id", "weights", "config", "taps", "norm_taps", "freeze",
                  "encoder_in_folder": bool, "lora": {rank, alpha, dropout, targets, blocks} | null,
                  "lora_base_sha256": str | null},
     "target": {"mean", "std"} | null, "metrics": {...}, "training": {...}}

``head.safetensors`` holds the head's tensors (``head.*``) and, when any encoder block was
trained, the encoder's (``encoder.*``); a frozen encoder is referenced by its model id and the
weights path it was loaded from (``--weights`` at predict time overrides the path; the model id
must match). A LoRA head stores only its adapters (``lora.*``) beside the head: they are put back
onto the base encoder loaded as for a frozen head, after checking that the adapted base weights
hash to ``lora_base_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clay_search.errors import CheckpointError, HeadError
from clay_search.model.backbone import ClayBackbone
from clay_search.model.checkpoints import WeightsInfo, load_encoder
from clay_search.model.clay import ClayConfig, ClayEncoder
from clay_search.model.heads import ChipModel, DenseModel
from clay_search.model.lora import (
    LoRAConfig,
    base_fingerprint,
    load_lora_state_dict,
    lora_state_dict,
)
from clay_search.model.normalise import NormalisationRecord, Normaliser

HEAD_FORMAT = "clay-search-head"
HEAD_JSON = "head.json"
HEAD_TENSORS = "head.safetensors"
TASKS = ("classify", "multilabel", "regress", "segment", "regress-pixel", "change")


@dataclass
class HeadSpec:
    """The contents of ``head.json`` (see the module docstring)."""

    task: str
    sensor: str
    bands: list[str]
    waves: list[float]
    normaliser: dict
    chip_size: int
    model: dict
    backbone: dict
    classes: list[str] | None = None
    ignore_index: int | None = None
    gsd: float | None = None
    target: dict | None = None
    metrics: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    #: how bands and normaliser were decided (``clay_search.ingest.taskdata.decision``): the
    #: policy a store's vectors must share to be this head's features; {} in older heads
    normalisation: dict = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        """Whether the head predicts per pixel (segmentation, pixel-wise regression)."""
        return self.model.get("kind") == "dense"

    def make_normaliser(self) -> Normaliser:
        """The normaliser the head was trained with."""
        import numpy as np

        n = self.normaliser
        return Normaliser(
            mean=np.asarray(n["mean"], dtype=np.float64),
            std=np.asarray(n["std"], dtype=np.float64),
            transform=n.get("transform"),
            stats_source=n.get("stats_source", "head"),
        )

    def record(self) -> NormalisationRecord | None:
        """The weights' normalisation record the training chips were planned with (None:
        none, or an older head that does not say)."""
        return NormalisationRecord.from_config(
            {"normalisation": self.normalisation.get("record_config")}
        )

    @property
    def plan_stats(self) -> str:
        """The ``stats`` mode to plan new imagery with, so it gets the training chips' bands
        (a statistics file plans as ``source``: bands without table statistics are kept)."""
        stats = self.normalisation.get("stats", "auto")
        return "source" if stats == "file" else stats

    def to_dict(self) -> dict:
        """The JSON document."""
        return {"format": HEAD_FORMAT, "version": 1, **asdict(self)}


def build_model(spec: HeadSpec, backbone: ClayBackbone) -> ChipModel | DenseModel:
    """The task model that ``spec.model`` describes, on ``backbone``."""
    m = spec.model
    if m["kind"] == "change":  # two dates: clay_search.model.change_head
        from clay_search.model.change_head import ChangeModel

        return ChangeModel(
            backbone,
            int(m["num_outputs"]),
            channels=int(m.get("channels", 64)),
            fusion=m.get("fusion", "concat+diff"),
        )
    if m["kind"] == "dense":
        return DenseModel(backbone, int(m["num_outputs"]), channels=int(m.get("channels", 64)))
    return ChipModel(
        backbone,
        int(m["num_outputs"]),
        pooling=m.get("pooling", "mean+std"),
        head=m.get("head", "linear"),
        hidden=int(m.get("hidden", 256)),
        dropout=float(m.get("dropout", 0.0)),
    )


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def save_head(model: ChipModel | DenseModel, spec: HeadSpec, out_dir: str | Path) -> Path:
    """Write ``head.safetensors`` then ``head.json`` (last, atomically) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bb = model.backbone
    trained_encoder = not bb.fully_frozen and bb.lora is None
    tensors = {
        f"head.{k}": v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.")
    }
    if trained_encoder:
        tensors.update(
            {
                f"encoder.{k}": v.detach().cpu().contiguous()
                for k, v in bb.encoder.state_dict().items()
            }
        )
    if bb.lora is not None:
        tensors.update({f"lora.{k}": v for k, v in lora_state_dict(bb.encoder).items()})
    info = bb.info
    spec.backbone = {
        "model_id": bb.model_id,
        "weights": info.path if info is not None else None,
        "config": info.config.to_dict() if info is not None else None,
        "taps": list(bb.taps),
        "norm_taps": bb.norm_taps,
        "freeze": bb.freeze,
        "encoder_in_folder": trained_encoder,
        "lora": bb.lora.to_dict() if bb.lora is not None else None,
        "lora_base_sha256": bb.lora_fingerprint,
    }
    tmp = out / (HEAD_TENSORS + ".tmp")
    save_file(tensors, str(tmp))
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / HEAD_TENSORS)
    doc = spec.to_dict()
    doc["tensors_sha256"] = hashlib.sha256((out / HEAD_TENSORS).read_bytes()).hexdigest()
    tmpj = out / (HEAD_JSON + ".tmp")
    tmpj.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmpj, out / HEAD_JSON)
    return out


def read_head_spec(path: str | Path) -> HeadSpec:
    """Read and check ``head.json`` of a head folder (:class:`HeadError` when it is not one)."""
    folder = Path(path)
    jp = folder / HEAD_JSON
    if not folder.is_dir() or not jp.exists():
        raise HeadError(
            f"{folder} is not a head folder ({HEAD_JSON} missing); heads are written by "
            "`clay-search finetune classify|regress|segment --out DIR`"
        )
    try:
        doc = json.loads(jp.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HeadError(
            f"{jp} is not valid JSON ({e}); the head folder is damaged: train it again"
        ) from None
    if doc.get("format") != HEAD_FORMAT:
        raise HeadError(f"{jp} is not a clay-search head (format {doc.get('format')!r})")
    if doc.get("task") not in TASKS:
        raise HeadError(f"{jp}: unknown task {doc.get('task')!r} (known: {', '.join(TASKS)})")
    keys = set(HeadSpec.__dataclass_fields__)
    try:
        return HeadSpec(**{k: v for k, v in doc.items() if k in keys})
    except TypeError as e:
        raise HeadError(f"{jp} misses fields ({e}); the head folder is damaged") from None


def load_head(
    path: str | Path, *, weights: str | Path | None = None, device: str = "cpu"
) -> tuple[ChipModel | DenseModel, HeadSpec]:
    """Load a head folder: the task model in eval mode and its spec.

    A frozen encoder is loaded from ``weights`` (default: the path recorded in the head, or the
    bundled weights when the recorded path is gone); its model id must be the head's.
    """
    folder = Path(path)
    spec = read_head_spec(folder)
    tp = folder / HEAD_TENSORS
    if not tp.exists():
        raise HeadError(f"{tp} is missing; the head folder is incomplete: train it again")
    want = json.loads((folder / HEAD_JSON).read_text()).get("tensors_sha256")
    if want and hashlib.sha256(tp.read_bytes()).hexdigest() != want:
        raise HeadError(
            f"{tp} does not match the checksum in {HEAD_JSON}; the head folder is "
            "damaged or was partly overwritten: train it again"
        )
    try:
        tensors = load_file(str(tp))
    except (SafetensorError, OSError, ValueError) as e:
        raise HeadError(f"{tp} is not a readable safetensors file ({e})") from None
    b = spec.backbone
    if b.get("encoder_in_folder"):
        try:
            cfg = ClayConfig(**b["config"])
        except (KeyError, TypeError) as e:
            raise HeadError(f"{folder}/{HEAD_JSON}: no valid backbone config ({e!r})") from None
        enc = ClayEncoder.from_config(cfg)
        state = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
        try:
            enc.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise HeadError(f"{tp}: the encoder tensors do not fit ({str(e)[:200]})") from None
        info = WeightsInfo(b["model_id"], cfg, str(folder), "clay-search-head")
    else:
        src = weights if weights is not None else b.get("weights")
        if src is not None and not Path(src).exists() and weights is None:
            src = None  # recorded path gone (another machine): the bundled weights
        try:
            enc, info = load_encoder(src)
        except CheckpointError as e:
            raise HeadError(f"the head's encoder could not be loaded: {e}") from None
        if info.model_id != b.get("model_id"):
            raise HeadError(
                f"the head {folder} was trained on encoder {b.get('model_id')} but the weights "
                f"{info.path} are {info.model_id}; pass the head's weights with --weights"
            )
    lora = None
    if b.get("lora"):
        try:
            lora = LoRAConfig.from_dict(b["lora"])
        except (KeyError, TypeError, ValueError) as e:
            raise HeadError(f"{folder}/{HEAD_JSON}: invalid LoRA settings ({e})") from None
        try:
            found = base_fingerprint(enc, lora)
        except ValueError as e:
            raise HeadError(f"{folder}/{HEAD_JSON}: invalid LoRA settings ({e})") from None
        if found != b.get("lora_base_sha256"):
            raise HeadError(
                f"the LoRA adapters of {folder} were trained on other base weights than "
                f"{info.path} (the adapted layers' SHA-256 differs though the model id "
                f"{info.model_id} matches); pass the head's base weights with --weights"
            )
    bb = ClayBackbone(
        enc,
        info,
        taps=b.get("taps"),
        freeze="all",
        norm_taps=bool(b.get("norm_taps", True)),
        lora=lora,
    )
    if lora is not None:
        state = {k[len("lora.") :]: v for k, v in tensors.items() if k.startswith("lora.")}
        try:
            load_lora_state_dict(bb.encoder, state)
        except ValueError as e:
            raise HeadError(f"{tp}: {e}; the head folder is damaged") from None
    model = build_model(spec, bb)
    head_state = {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
    own = {k for k in model.state_dict() if not k.startswith("backbone.")}
    if set(head_state) != own:
        missing = sorted(own - set(head_state))[:5]
        raise HeadError(
            f"{tp} does not fit a {spec.model.get('kind')} head "
            f"(missing {missing}); the head folder is damaged"
        )
    try:
        model.load_state_dict(head_state, strict=False)
    except RuntimeError as e:
        raise HeadError(f"{tp}: head tensors of the wrong shape ({str(e)[:200]})") from None
    return model.to(device).eval(), spec
