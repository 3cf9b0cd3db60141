"""The ``emb`` GeoParquet metadata convention (Earth Index / geo-embeddings), read and written.

A Parquet file's key-value metadata holds, beside GeoParquet's ``geo``, an ``emb`` key with a
JSON object::

    {"version": "0.0.1",
     "model": {"id", "source", "version", "family", "name", "description", "config"},
     "providers": [{"name", "url", "roles"}],           # STAC provider objects
     "license": "CC-BY-4.0",                            # STAC licensing
     "datetime" | "start_datetime" + "end_datetime",    # STAC datetime (ISO 8601, UTC)
     "datasets": [{"dataset_id", "dataset_source", "dataset_name", "dataset_description"}],
     "embedding_dim": 384,
     "embedding_quantization": "None" | "int8" | ...}

Published files differ in details (``source_datasets`` for ``datasets``; dataset keys
``source``/``name`` for ``dataset_source``/``dataset_name``; an ``embedding`` object holding
``dim``/``quantization`` or ``embeddings_dim``/``embeddings_quantization``, as in Earth Index's
published 21MNT sample), so :func:`read_emb` accepts those spellings and :class:`EmbInfo`
gives one view. clay-search adds ``embedding_scale`` and
``embedding_offset`` (value = stored * scale + offset) for integer quantisation, and a
``clay_search`` object with the store's pooling, normalisation and weights hash.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EMB_KEY = b"emb"
EMB_VERSION = "0.0.1"


@dataclass(frozen=True)
class EmbInfo:
    """What an ``emb`` object says, in one spelling."""

    model_id: str | None = None
    model: dict = field(default_factory=dict)
    providers: list = field(default_factory=list)
    license: str | None = None
    datetime: str | None = None
    start_datetime: str | None = None
    end_datetime: str | None = None
    datasets: list = field(default_factory=list)
    dim: int | None = None
    quantization: str | None = None
    scale: float | None = None
    offset: float | None = None
    raw: dict = field(default_factory=dict)

    @property
    def representative_datetime(self) -> str | None:
        """``datetime``, else the middle of ``start_datetime``..``end_datetime`` (ISO text)."""
        if self.datetime:
            return self.datetime
        if self.start_datetime and self.end_datetime:
            a = _iso(self.start_datetime)
            b = _iso(self.end_datetime)
            if a is not None and b is not None:
                return (a + (b - a) / 2).isoformat()
        return self.start_datetime or self.end_datetime

    def provenance(self) -> dict:
        """The parts a store keeps in ``store.json``."""
        out = {
            "model": self.model or ({"id": self.model_id} if self.model_id else {}),
            "providers": self.providers,
            "license": self.license,
            "datetime": self.datetime,
            "start_datetime": self.start_datetime,
            "end_datetime": self.end_datetime,
            "datasets": self.datasets,
            "embedding_dim": self.dim,
            "embedding_quantization": self.quantization,
        }
        return {k: v for k, v in out.items() if v not in (None, [], {})}


def _iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _scale_from_text(text: str | None) -> tuple[float | None, float | None]:
    """``scale``/``offset`` written inside a quantisation description (``int8, scale=0.01``)."""
    if not text:
        return None, None
    num = r"([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)"
    s = re.search(rf"scale\s*[=:]?\s*{num}", text)
    o = re.search(rf"offset\s*[=:]?\s*{num}", text)
    return (float(s.group(1)) if s else None), (float(o.group(1)) if o else None)


def parse_emb(obj: dict[str, Any]) -> EmbInfo:
    """An :class:`EmbInfo` from a decoded ``emb`` object (unknown keys are kept in ``raw``)."""
    model = obj.get("model") or {}
    if isinstance(model, str):
        model = {"id": model}
    given = obj.get("embedding")
    emb: dict = given if isinstance(given, dict) else {}
    dim = obj.get(
        "embedding_dim",
        next((emb[k] for k in ("embeddings_dim", "embedding_dim", "dim") if k in emb), None),
    )
    quant = obj.get(
        "embedding_quantization",
        next(
            (
                emb[k]
                for k in ("embeddings_quantization", "embedding_quantization", "quantization")
                if k in emb
            ),
            None,
        ),
    )
    quant = None if quant is None or str(quant).strip().lower() in {"", "none", "null"} else quant
    scale = obj.get("embedding_scale", emb.get("scale"))
    offset = obj.get("embedding_offset", emb.get("offset"))
    if scale is None and isinstance(quant, str):
        scale, t_offset = _scale_from_text(quant)
        offset = offset if offset is not None else t_offset
    datasets = obj.get("datasets", obj.get("source_datasets")) or []
    if isinstance(datasets, list):
        datasets = [
            {
                f"dataset_{k}" if k in ("id", "source", "name", "description") else k: v
                for k, v in d.items()
            }
            if isinstance(d, dict)
            else d
            for d in datasets
        ]
    providers = obj.get("providers") or []
    lic = obj.get("license", obj.get("licensing"))
    if isinstance(lic, dict):
        lic = lic.get("license") or json.dumps(lic)
    return EmbInfo(
        model_id=str(model["id"]) if model.get("id") else None,
        model=dict(model),
        providers=list(providers) if isinstance(providers, list) else [providers],
        license=lic,
        datetime=obj.get("datetime"),
        start_datetime=obj.get("start_datetime"),
        end_datetime=obj.get("end_datetime"),
        datasets=list(datasets) if isinstance(datasets, list) else [datasets],
        dim=int(dim) if dim not in (None, "") else None,
        quantization=str(quant) if quant is not None else None,
        scale=float(scale) if scale is not None else None,
        offset=float(offset) if offset is not None else None,
        raw=dict(obj),
    )


def read_emb(metadata: dict[bytes, bytes] | None) -> EmbInfo | None:
    """The ``emb`` object of a Parquet file's key-value metadata (``None`` when absent).

    Raises ``ValueError`` when the key holds no JSON object.
    """
    if not metadata or EMB_KEY not in metadata:
        return None
    obj = json.loads(metadata[EMB_KEY])
    if not isinstance(obj, dict):
        raise ValueError("the 'emb' metadata is not a JSON object")
    return parse_emb(obj)


def build_emb(
    *,
    model_id: str,
    dim: int,
    model: dict | None = None,
    providers: list | None = None,
    license: str | None = None,
    start: str | None = None,
    end: str | None = None,
    datasets: list | None = None,
    clay_search: dict | None = None,
) -> dict:
    """An ``emb`` object for a file clay-search writes (float32 vectors, no quantisation)."""
    out: dict[str, Any] = {
        "version": EMB_VERSION,
        "model": {"id": model_id, **(model or {})},
        "providers": providers or [],
        "license": license or "other",
        "datetime": None,
        "start_datetime": start,
        "end_datetime": end,
        "datasets": datasets or [],
        "embedding_dim": int(dim),
        "embedding_quantization": "None",
    }
    out["model"].setdefault("source", "https://github.com/Clay-foundation/model")
    if start and start == end:
        out["datetime"] = start
    if clay_search:
        out["clay_search"] = clay_search
    return out
