"""Applying a task head: chips to a table, scenes to class rasters, a store's chips to columns.

- :func:`predict_chips`: a chip head (classification, multi-label, regression) over files or
  folders -> one row per chip (``source``, ``window``, ``geometry``, ``label_pred``,
  ``score``, ``prob_<class>`` or ``value_pred``) written to Parquet/GeoParquet/CSV by extension;
- :func:`predict_rasters`: a dense head (segmentation, pixel-wise regression) over images -> one
  tiled GeoTIFF per image in a folder, same size and grid (transform/CRS when the image has
  one), predicted window by window with overlap; overlapping windows are blended with a
  tent-shaped weight, and only a strip of chip height x image width is held in memory;
- :func:`predict_store`: a chip head over every chip of a store (re-read from each chip's
  ``source`` and ``window``) -> ``pred_label``/``pred_score`` (or ``pred_value``) columns in a new
  table version; then the index is synced.

Every output is written to a temporary name and moved into place when complete: a failure
leaves nothing half written. A head applied to other bands or another sensor than it was trained
on is a :class:`~clay_search.errors.HeadError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window

from clay_search.errors import (
    BandMismatchError,
    HeadError,
    SourceNotFoundError,
    UnknownSensorError,
)
from clay_search.geo import footprints
from clay_search.ingest.chips import chip_windows, window_json
from clay_search.ingest.params import IngestParams
from clay_search.ingest.plan import SourcePlan, plan_source
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.sources import Source, SourceFailure, discover
from clay_search.ingest.taskdata import as_source, chip_gsd
from clay_search.model.backbone import Metadata
from clay_search.model.embedder import vector_model_id
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.headfile import HeadSpec, load_head
from clay_search.model.sensors import SensorRegistry

PRED_COLUMNS = ("pred_label", "pred_score", "pred_value")


@dataclass
class PredictReport:
    """What a prediction run did."""

    written: list[str] = field(default_factory=list)
    chips: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    table_version: int | None = None
    index: dict | None = None
    #: ``predict_store``: ``"embeddings"`` (the stored vectors) or ``"pixels"`` (re-read)
    features_from: str | None = None
    #: why the stored embeddings were (not) used
    features_note: str | None = None


def _plan(
    source: Source,
    spec: HeadSpec,
    registry: SensorRegistry,
    *,
    stride=None,
    bands: list[str] | None = None,
) -> SourcePlan:
    """Plan a source as the head sees it; its bands must be the head's."""
    params = IngestParams(
        chip_size=spec.chip_size,
        stride=stride,
        sensor=spec.sensor,
        bands=bands,
        stats=spec.plan_stats,
    )
    record = spec.record()  # bands the training chips kept (as ingest with the weights keeps)
    try:
        try:
            plan = plan_source(source, registry, params, record=record)
        except BandMismatchError:
            if bands is not None:
                raise
            # a file without band names: read it as the head's bands, in the head's order
            params.bands = list(spec.bands)
            plan = plan_source(source, registry, params, record=record)
    except (BandMismatchError, UnknownSensorError) as e:
        raise HeadError(
            f"{source.display}: the head was trained on {spec.sensor} bands {spec.bands}, and "
            f"this image does not fit them ({e})"
        ) from None
    if plan.bands.band_names != list(spec.bands):
        raise HeadError(
            f"{source.display}: the head was trained on {spec.sensor} bands {spec.bands} but "
            f"this image gives {plan.bands.sensor.name} bands {plan.bands.band_names}; apply "
            "the head to imagery with the same bands (or name them with --bands)"
        )
    return plan


def _check_sensor(name: str | None, spec: HeadSpec, what: str) -> None:
    if name and name != spec.sensor:
        raise HeadError(
            f"{what} comes from sensor {name} but the head was trained on {spec.sensor}; "
            "train a head on this sensor's imagery"
        )


def _refuse_change(head, spec: HeadSpec) -> None:
    if spec.task == "change":
        raise HeadError(
            f"{head} is a change head: it takes two dates of one place "
            "(clay-search predict --head H --before A.tif --after B.tif --out change.tif)"
        )


class _Runner:
    """Normalise raw chips with the head's normaliser and run the model in batches."""

    def __init__(self, model, spec: HeadSpec, device: str = "cpu") -> None:
        self.model, self.spec, self.device = model, spec, torch.device(device)
        self.norm = spec.make_normaliser()
        self.waves = torch.tensor(spec.waves, dtype=torch.float32)

    def __call__(
        self, raw: np.ndarray, valid: np.ndarray, gsd: float, datetimes, lonlats
    ) -> np.ndarray:
        x = torch.from_numpy(self.norm(raw, valid[:, None])).to(self.device)
        meta = Metadata(
            self.waves.to(self.device),
            float(gsd),
            encode_time(datetimes).to(self.device),
            encode_latlon(lonlats).to(self.device),
        )
        with torch.inference_mode():
            out = self.model(x, meta).float()
        return self.finish(out)

    def from_features(self, feats: np.ndarray) -> np.ndarray:
        """The head alone on chip vectors ``[B, E]`` (the backbone's pooled features)."""
        with torch.inference_mode():
            out = self.model.decode(torch.from_numpy(feats).to(self.device)).float()
        return self.finish(out)

    def finish(self, out: torch.Tensor) -> np.ndarray:
        """Raw model outputs -> probabilities (classes) or values in target units."""
        s = self.spec
        if s.task == "classify":
            return torch.softmax(out, 1).cpu().numpy()
        if s.task == "multilabel":
            return torch.sigmoid(out).cpu().numpy()
        if s.task == "segment":
            return torch.softmax(out, 1).cpu().numpy()
        t = s.target or {"mean": 0.0, "std": 1.0}
        return (out * float(t["std"]) + float(t["mean"])).cpu().numpy()


def _chip_windows_of(plan: SourcePlan, size: int) -> tuple[list[Window], bool]:
    m = plan.meta
    if max(m.width, m.height) <= 2 * size:
        return [Window(0, 0, m.width, m.height)], True
    return chip_windows(m.width, m.height, size, size), False


def _chip_rows(plan: SourcePlan, runner: _Runner, spec: HeadSpec, batch_size: int) -> list[dict]:
    size = spec.chip_size
    windows, whole = _chip_windows_of(plan, size)
    fps = footprints(
        plan.meta.crs, plan.meta.transform, windows, size=(plan.meta.width, plan.meta.height)
    )
    rows: list[dict] = []
    with SourceReader(plan.source) as r:
        for s in range(0, len(windows), batch_size):
            ws = windows[s : s + batch_size]
            reads = (
                [r.read(w, plan.bands.indices, size) for w in ws]
                if whole
                else r.read_many(ws, plan.bands.indices)
            )
            raw = np.stack([a for a, _ in reads])
            valid = np.stack([v for _, v in reads])
            lonlats = [fps[s + i][2] for i in range(len(ws))]
            out = runner(
                raw, valid, chip_gsd(plan, size, whole), [plan.datetime] * len(ws), lonlats
            )
            for i, w in enumerate(ws):
                row = {
                    "source": plan.source.display,
                    "window": window_json(w),
                    "geometry": fps[s + i][0],
                    "sensor": plan.bands.sensor.name,
                }
                row.update(_pred_fields(out[i], spec))
                rows.append(row)
    return rows


def _pred_fields(o: np.ndarray, spec: HeadSpec) -> dict:
    if spec.task in ("classify", "multilabel"):
        classes = spec.classes or []
        k = int(np.argmax(o))
        d = {"label_pred": classes[k], "score": float(o[k])}
        if spec.task == "multilabel":
            d["labels_pred"] = ";".join(c for c, p in zip(classes, o, strict=True) if p >= 0.5)
        d.update({f"prob_{c}": float(p) for c, p in zip(classes, o, strict=True)})
        return d
    return {"value_pred": float(np.ravel(o)[0])}


def _write_table(rows: list[dict], out: Path) -> None:
    import geopandas as gpd
    import pandas as pd
    import shapely

    df = pd.DataFrame(rows)
    geoms = [shapely.from_wkb(g) if g is not None else None for g in df.pop("geometry")]
    ext = out.suffix.lower()
    tmp = out.with_name(out.name + ".tmp")
    if ext == ".csv":
        df["geometry"] = [g.wkt if g is not None else None for g in geoms]
        df.to_csv(tmp, index=False)
    elif ext in (".parquet", ".geoparquet"):
        if any(g is not None for g in geoms):
            gpd.GeoDataFrame(df, geometry=geoms, crs="EPSG:4326").to_parquet(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    else:
        raise HeadError(f"--out {out}: write .parquet, .geoparquet or .csv")
    os.replace(tmp, out)


def _sources(inputs: Sequence[str | Path], report: PredictReport) -> list[Source]:
    out = []
    for s in discover([str(p) for p in inputs]):
        if isinstance(s, SourceFailure):
            report.skipped.append((s.source, s.reason))
        elif s.kind in ("raster", "labelled"):
            out.append(as_source(s.paths[0], label=s.label))
        else:
            out.append(s)
    return out


def predict_chips(
    head: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    weights=None,
    batch_size: int = 64,
    device: str = "cpu",
    bands: list[str] | None = None,
) -> PredictReport:
    """Classify (or regress) every chip of ``inputs`` and write the table ``out``."""
    model, spec = load_head(head, weights=weights, device=device)
    _refuse_change(head, spec)
    if spec.dense:
        raise HeadError(
            f"{head} is a {spec.task} head: predict writes rasters for it (--out FOLDER)"
        )
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".geoparquet", ".csv"):
        raise HeadError(f"--out {out}: write .parquet, .geoparquet or .csv")
    report = PredictReport()
    registry = SensorRegistry.default()
    runner = _Runner(model, spec, device)
    rows: list[dict] = []
    sources = _sources(inputs, report)
    if not sources:
        raise SourceNotFoundError(f"no images found in {list(map(str, inputs))}")
    plans = [_plan(s, spec, registry, bands=bands) for s in sources]  # all checked first
    for plan in plans:
        rows.extend(_chip_rows(plan, runner, spec, batch_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_table(rows, out)
    report.written.append(str(out))
    report.chips = len(rows)
    return report


def _tent(size: int) -> np.ndarray:
    """``[size, size]`` blending weights: 1 in the middle, falling towards the edges (> 0)."""
    r = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5) / (size / 2)
    w = np.clip(r, 0.05, 1.0).astype(np.float32)
    return np.outer(w, w)


def predict_raster(
    model,
    spec: HeadSpec,
    plan: SourcePlan,
    out: Path,
    *,
    device="cpu",
    overlap: float = 0.5,
    batch_size: int = 16,
    reader=None,
    runner=None,
) -> Path:
    """One dense prediction GeoTIFF for ``plan``'s image (see the module docstring).

    ``reader``: a context manager with ``read_many(windows, bands)`` in place of the plan's
    :class:`SourceReader`, and ``runner`` one with :class:`_Runner`'s call, for inputs that are
    not one image (the two dates of :func:`clay_search.change_task.predict_change`).
    """
    import rasterio

    size = spec.chip_size
    step = max(1, int(round(size * (1 - overlap))))
    m = plan.meta
    runner = runner or _Runner(model, spec, device)
    seg = spec.task == "segment"
    k = len(spec.classes) if seg else 1
    values = np.array([int(c) for c in spec.classes], np.int64) if seg else None
    weight = _tent(size)
    windows = chip_windows(m.width, m.height, size, step)
    starts = sorted({int(w.row_off) for w in windows})
    buf_h = size + step
    acc = np.zeros((k, buf_h, m.width), np.float32)
    wsum = np.zeros((buf_h, m.width), np.float32)
    okay = np.zeros((buf_h, m.width), bool)
    dtype = (
        "uint8"
        if values is not None and values.max() < 255 and values.min() >= 0  # values iff seg
        else ("int32" if seg else "float32")
    )
    nodata = 255 if dtype == "uint8" else (-1 if seg else float("nan"))
    profile = {
        "driver": "GTiff",
        "width": m.width,
        "height": m.height,
        "count": 1,
        "dtype": dtype,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "nodata": nodata,
    }
    if m.georeferenced:
        profile.update(crs=m.crs, transform=m.transform)
    tmp = out.with_name(out.name + ".tmp.tif")
    base = 0
    try:
        with reader or SourceReader(plan.source) as r, rasterio.open(tmp, "w", **profile) as dst:
            for ri, row0 in enumerate(starts):
                row_ws = [w for w in windows if int(w.row_off) == row0]
                for s in range(0, len(row_ws), batch_size):
                    ws = row_ws[s : s + batch_size]
                    reads = r.read_many(ws, plan.bands.indices)
                    raw = np.stack([a for a, _ in reads])
                    valid = np.stack([v for _, v in reads])
                    fps = footprints(m.crs, m.transform, ws, size=(m.width, m.height))
                    out_b = runner(
                        raw, valid, plan.gsd, [plan.datetime] * len(ws), [f[2] for f in fps]
                    )
                    for i, w in enumerate(ws):
                        c0 = int(w.col_off)
                        c1 = min(c0 + size, m.width)
                        y0 = row0 - base
                        y1 = min(y0 + size, buf_h, m.height - base)
                        h, wd = y1 - y0, c1 - c0
                        acc[:, y0:y1, c0:c1] += out_b[i][:, :h, :wd] * weight[:h, :wd]
                        wsum[y0:y1, c0:c1] += weight[:h, :wd]
                        okay[y0:y1, c0:c1] |= valid[i][:h, :wd]
                last = ri == len(starts) - 1
                done_to = m.height if last else starts[ri + 1]  # rows final after this row
                n = min(done_to - base, m.height - base)
                if n <= 0:
                    continue
                probs = acc[:, :n] / np.maximum(wsum[:n], 1e-6)
                if seg:
                    assert values is not None  # the class values of a segmentation head
                    lab = values[probs.argmax(0)].astype(dtype)
                    lab[~okay[:n]] = nodata
                else:
                    lab = probs[0].astype(np.float32)
                    lab[~okay[:n]] = np.nan
                dst.write(lab[None], window=Window(0, base, m.width, n))
                acc = np.roll(acc, -n, axis=1)
                acc[:, -n:] = 0
                wsum = np.roll(wsum, -n, axis=0)
                wsum[-n:] = 0
                okay = np.roll(okay, -n, axis=0)
                okay[-n:] = False
                base += n
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def predict_rasters(
    head: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    weights=None,
    device: str = "cpu",
    overlap: float = 0.5,
    bands: list[str] | None = None,
) -> PredictReport:
    """A dense head over images: ``<out_dir>/<image stem>.tif`` each."""
    model, spec = load_head(head, weights=weights, device=device)
    _refuse_change(head, spec)
    if not spec.dense:
        raise HeadError(
            f"{head} is a {spec.task} head: predict writes a table for it (--out FILE.parquet|.csv)"
        )
    if not 0.0 <= overlap < 1.0:
        raise HeadError(f"--overlap {overlap} must be in [0, 1)")
    report = PredictReport()
    registry = SensorRegistry.default()
    sources = _sources(inputs, report)
    if not sources:
        raise SourceNotFoundError(f"no images found in {list(map(str, inputs))}")
    plans = [_plan(s, spec, registry, bands=bands) for s in sources]
    out = Path(out_dir)
    if out.suffix.lower() in (".tif", ".tiff", ".parquet", ".csv"):
        raise HeadError(f"--out {out}: a dense head writes one GeoTIFF per image into a folder")
    out.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        stem = Path(plan.source.paths[0]).stem
        p = predict_raster(model, spec, plan, out / f"{stem}.tif", device=device, overlap=overlap)
        report.written.append(str(p))
    return report


FEATURES = ("auto", "embeddings", "pixels")


def stored_features(spec: HeadSpec, model, info, attrs: list[dict]):
    """Whether the head's input features are what the store holds as ``embedding``.

    Returns ``(standard, None, False)`` when they are (``standard``: ``(mean, std)`` to undo
    the store's z-scoring, or ``None``), else ``(None, reason, prepared_otherwise)``. They are
    when the head is a chip head on an untrained base encoder (frozen, no LoRA) whose model id
    and pooling make the store's model id, and every chip's source was ingested at the head's
    chip size, with the head's bands and the head's normalisation (from the run manifests).
    ``prepared_otherwise``: the vectors are this head's encoder's but a source's chips were
    made with other bands or another normalisation than the head's training chips (what
    :func:`predict_store` refuses unless pixels are asked for).
    """
    b = spec.backbone
    if spec.dense:
        return None, "a dense head needs token grids, not chip vectors", False
    if b.get("encoder_in_folder"):
        return None, f"the head trained encoder blocks (freeze={b.get('freeze')!r})", False
    if b.get("lora"):
        return None, "the head's LoRA adapters change the encoder's features", False
    pooling = spec.model.get("pooling", "mean+std")
    base = b.get("model_id")
    store_id = info.model_id
    stats = (
        (model.backbone.info.embedding_stats or {}).get(pooling) if model.backbone.info else None
    )
    standard = None
    if store_id == vector_model_id(base, pooling, None):
        pass
    elif stats is not None:
        standard = (
            torch.tensor(stats["mean"], dtype=torch.float32),
            torch.tensor(stats["std"], dtype=torch.float32).clamp(min=1e-6),
        )
        if store_id != vector_model_id(base, pooling, standard):
            return (
                None,
                f"the store holds {store_id} vectors; the head uses {pooling} pooling of {base}",
                False,
            )
    else:
        return (
            None,
            f"the store holds {store_id} vectors; the head uses {pooling} pooling of {base}",
            False,
        )
    return _check_manifests(spec, info, attrs, standard)


def _check_manifests(spec: HeadSpec, info, attrs: list[dict], standard):
    runs = info.path / "runs"
    covered: dict[str, tuple[dict, dict]] = {}  # source -> (source record, normaliser)
    names = sorted(runs.iterdir(), key=lambda p: p.name) if runs.exists() else []
    for path in names:
        if not path.name.endswith(".json") or path.name.startswith("import-"):
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        chip = (doc.get("parameters") or {}).get("chip_size")
        norms = ((doc.get("totals") or {}).get("normalisers") or {}).values()
        by_src = {src: n for n in norms for src in n.get("sources", [])}
        for rec in doc.get("sources", []):
            src = rec.get("source")
            if rec.get("status") == "ok" and src in by_src:
                covered[src] = ({**rec, "chip_size": chip}, by_src[src])
    head_norm = spec.normaliser
    for src in sorted({r["source"] for r in attrs}):
        if src not in covered:
            return None, f"no ingest run manifest of the store says how {src} was embedded", False
        rec, norm = covered[src]
        if rec.get("chip_size") != spec.chip_size:
            return (
                None,
                f"{src} was embedded as {rec.get('chip_size')} px chips; the head uses "
                f"{spec.chip_size} px",
                False,
            )
        if list(rec.get("bands") or []) != list(spec.bands):
            return (
                None,
                f"{src} was embedded with bands {rec.get('bands')}; the head was trained on "
                f"{spec.bands}",
                True,
            )
        same = (
            norm.get("transform") == head_norm.get("transform")
            and np.allclose(norm.get("mean", []), head_norm.get("mean", []), rtol=1e-6)
            and np.allclose(norm.get("std", []), head_norm.get("std", []), rtol=1e-6)
        )
        if not same:
            return (
                None,
                f"{src} was normalised otherwise ({norm.get('stats_source')} statistics) than "
                f"the head's training chips ({head_norm.get('stats_source')})",
                True,
            )
    return standard, None, False


def _prepared_otherwise(spec: HeadSpec, info, why: str | None) -> str:
    """The refusal of a store whose vectors were made from otherwise prepared chips."""
    stats = spec.normalisation.get("stats", "auto")
    store_stats = (info.normalisation or {}).get("stats")
    if not spec.normalisation:
        how = (
            "this head predates the record of its normalisation decision: train it again "
            "(`clay-search finetune` now plans chips as `clay-search ingest` does)"
        )
    else:
        flag = f"--stats {store_stats}" if store_stats and store_stats != "file" else "--stats S"
        how = (
            f"train the head as the store was ingested (`clay-search finetune ... --weights W "
            f"{flag}` plans chips as `clay-search ingest` with the same weights and --stats "
            f"does; this head was trained with --stats {stats})"
        )
    return (
        f"the store {info.path} holds this head's encoder vectors, but {why}; its predictions "
        f"would not describe the stored vectors. Fix: {how}, or ingest the sources into a new "
        f"store as the head was trained (--bands {','.join(spec.bands)} --stats {stats}), or "
        "pass --features pixels to re-read every chip with the head's own bands and "
        "normalisation"
    )


def _predict_from_embeddings(table, runner: _Runner, standard, batch_size: int):
    """(chip ids, outputs) from the stored ``embedding`` column, batch by batch."""
    ids, outs = [], []
    reader = table.search().select(["chip_id", "embedding"]).limit(None).to_batches(batch_size)
    for batch in reader:
        if not len(batch):
            continue
        emb = batch.column("embedding")
        vec = np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
            len(batch), -1
        )
        if standard is not None:
            vec = vec * standard[1].numpy() + standard[0].numpy()
        outs.append(runner.from_features(vec))
        ids.extend(batch.column("chip_id").to_pylist())
    return ids, (np.concatenate(outs) if outs else np.zeros((0, 1), np.float32))


def predict_store(
    head: str | Path,
    store: str | Path,
    *,
    weights=None,
    batch_size: int = 64,
    device: str = "cpu",
    features: str = "auto",
) -> PredictReport:
    """Predict every chip of a store and write the prediction columns (``pred_label``,
    ``pred_score`` for classification; ``pred_value`` for regression).

    ``features``: ``"auto"`` uses the stored embeddings when they are the head's input features
    (:func:`stored_features`: same encoder model id and pooling, chip size, bands and
    normalisation; no pixel is read), else re-reads each chip's pixels from its ``source`` and
    ``window``, saying why in ``PredictReport.features_note``; ``"embeddings"`` refuses when
    they are not (:class:`HeadError` with the reason); ``"pixels"`` always re-reads.

    A store whose vectors are the head's encoder's but were made with other bands or another
    normalisation than the head's training chips is refused under ``"auto"`` too
    (:class:`HeadError` saying how to fix it: train the head as the store was ingested, or
    ask for ``"pixels"``), so labels are never silently computed from other inputs than the
    store's vectors.
    """
    from clay_search.store.layout import read_store_info
    from clay_search.store.lock import store_lock

    if features not in FEATURES:
        raise HeadError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
    model, spec = load_head(head, weights=weights, device=device)
    _refuse_change(head, spec)
    if spec.dense:
        raise HeadError(
            f"{head} is a {spec.task} head; a store holds chips: use a "
            "classification or regression head"
        )
    info = read_store_info(store)
    # a writer: one at a time with ingest, import and index sync (a busy store refuses at once)
    with store_lock(info.path, "predict"):
        return _predict_store_locked(info, model, spec, batch_size, features, device)


def _predict_store_locked(
    info, model, spec: HeadSpec, batch_size: int, features: str, device: str
) -> PredictReport:
    """:func:`predict_store`'s reads and writes, holding the store's write lock."""
    import pyarrow as pa

    from clay_search.store import sync_index
    from clay_search.store.layout import open_chips_table

    table = open_chips_table(info, create=False)
    attrs = (
        table.search()
        .select(["chip_id", "source", "window", "sensor", "datetime"])
        .limit(None)
        .to_arrow()
        .to_pylist()
    )
    report = PredictReport()
    registry = SensorRegistry.default()
    runner = _Runner(model, spec, device)
    by_source: dict[str, list[dict]] = {}
    for row in attrs:
        by_source.setdefault(row["source"], []).append(row)
    for src, rows in by_source.items():  # every source checked before anything is predicted
        _check_sensor(rows[0]["sensor"], spec, f"store chips of {src}")
    ids: list[str] = []
    outputs: list[np.ndarray] = []
    standard, why, otherwise = (
        (None, "pixels asked for", False)
        if features == "pixels"
        else (stored_features(spec, model, info, attrs))
    )
    if otherwise:
        raise HeadError(_prepared_otherwise(spec, info, why))
    if why is None:
        report.features_from = "embeddings"
        report.features_note = f"stored embeddings ({info.model_id}); no pixels read"
        ids, out = _predict_from_embeddings(table, runner, standard, batch_size)
        outputs = list(out)
    else:
        if features == "embeddings":
            raise HeadError(f"the store's embeddings are not this head's features: {why}")
        report.features_from = "pixels"
        report.features_note = f"pixels re-read: {why}"
        ids, outputs = _predict_from_pixels(by_source, spec, runner, registry, batch_size, report)
    labels, scores, values = [], [], []
    for o in outputs:
        if spec.task in ("classify", "multilabel"):
            k = int(np.argmax(o))
            labels.append(spec.classes[k])
            scores.append(float(o[k]))
        else:
            values.append(float(np.ravel(o)[0]))
    done = set(ids)
    rest = [r["chip_id"] for r in attrs if r["chip_id"] not in done]  # skipped: nulls
    all_ids = pa.array(ids + rest, pa.string())
    if spec.task in ("classify", "multilabel"):
        fields = [pa.field("pred_label", pa.string()), pa.field("pred_score", pa.float32())]
        new = pa.table(
            {
                "chip_id": all_ids,
                "pred_label": pa.array(labels + [None] * len(rest), pa.string()),
                "pred_score": pa.array(scores + [None] * len(rest), pa.float32()),
            }
        )
    else:
        fields = [pa.field("pred_value", pa.float32())]
        new = pa.table(
            {"chip_id": all_ids, "pred_value": pa.array(values + [None] * len(rest), pa.float32())}
        )
    # the other task's columns of an earlier run are dropped; these are added (null) if new,
    # then filled by chip id in one merge (a new table version each step)
    stale = [c for c in PRED_COLUMNS if c in table.schema.names and c not in new.column_names]
    if stale:
        table.drop_columns(stale)
    missing = [f for f in fields if f.name not in table.schema.names]
    if missing:
        table.add_columns(missing)
    table.merge_insert("chip_id").when_matched_update_all().execute(new)
    report.chips = len(ids)
    report.table_version = int(table.version)
    report.index = sync_index(info.path).to_dict()
    report.written.append(str(info.path))
    return report


def _predict_from_pixels(
    by_source: dict[str, list[dict]],
    spec: HeadSpec,
    runner: _Runner,
    registry: SensorRegistry,
    batch_size: int,
    report: PredictReport,
) -> tuple[list[str], list[np.ndarray]]:
    """(chip ids, outputs) from each chip's pixels, re-read from its source and window."""
    plans = {}
    for src in by_source:
        if not Path(src).exists():
            report.skipped.append((src, "source file not found (moved, a band set or STAC)"))
            continue
        plans[src] = _plan(as_source(src), spec, registry)
    ids: list[str] = []
    outputs: list[np.ndarray] = []
    size = spec.chip_size
    for src, plan in plans.items():
        rows = by_source[src]
        with SourceReader(plan.source) as r:
            for s in range(0, len(rows), batch_size):
                part = rows[s : s + batch_size]
                wins = [Window(**json.loads(x["window"])) for x in part]
                resample = [(int(w.width), int(w.height)) != (size, size) for w in wins]
                reads = [
                    r.read(w, plan.bands.indices, size if rs else None)
                    for w, rs in zip(wins, resample, strict=True)
                ]
                raw = np.stack([a for a, _ in reads])
                valid = np.stack([v for _, v in reads])
                fps = footprints(
                    plan.meta.crs,
                    plan.meta.transform,
                    wins,
                    size=(plan.meta.width, plan.meta.height),
                )
                out = runner(
                    raw,
                    valid,
                    chip_gsd(plan, size, any(resample)),
                    [x["datetime"] for x in part],
                    [f[2] for f in fps],
                )
                ids.extend(x["chip_id"] for x in part)
                outputs.extend(out)
    return ids, outputs
