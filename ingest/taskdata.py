"""Labelled chips for fine-tuning, read with ingest's own reader, band plan and normaliser.

- :func:`read_labelled_folder`: ``DATA/<Class>/*`` chips (class = folder), or the chips listed
  in a labels CSV (``source,labels``; several labels joined with ``;`` = multi-label);
- :func:`read_target_table`: chips and one value each, from a CSV/Parquet/GeoParquet with
  ``source`` and a value column (per-chip regression);
- :func:`read_pairs`: image + mask rasters of the same size (class masks for segmentation, value
  rasters for pixel-wise regression), cut into overlapping chips, masks cut alike.

Everything comes back as a :class:`TaskChips` of raw pixels (the files' type) with the group
each chip belongs to (its image, or its tile of a single image), which the held-out split uses:
chips of one group are never on both sides. Sources open through
:class:`~clay_search.ingest.raster.SourceReader`, the bands are mapped by
:func:`~clay_search.ingest.plan.plan_source`, and the normaliser is the one ingest would choose
(:func:`~clay_search.ingest.plan.decide_normaliser`) unless given (a head's, at predict time).

Pass the weights' normalisation ``record``
(:class:`~clay_search.model.normalise.NormalisationRecord`, what ``ClayBackbone.info`` carries)
and the ``stats`` mode ingest uses: bands and normaliser are then those that ``clay-search
ingest`` with the same weights and ``--stats`` gives the same files (e.g. EuroSAT MS keeps the
13 bands the bundled weights were trained with), so a head trained here applies to a store's
vectors.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from clay_search.errors import BandMismatchError, SourceNotFoundError, TrainingDataError
from clay_search.geo import footprints
from clay_search.ingest.chips import chip_windows
from clay_search.ingest.params import IngestParams
from clay_search.ingest.plan import SourcePlan, decide_normaliser, plan_source
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.readers import ReaderPool
from clay_search.ingest.sources import RASTER_EXTS, Source, _raster_source, discover
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.normalise import NormalisationRecord, Normaliser, normalisation_policy
from clay_search.model.sensors import SensorRegistry


@dataclass
class _PlainSource(Source):
    """A source read without a georeference check (plain TIFF/PNG images and masks)."""

    @property
    def needs_crs(self) -> bool:
        return False


def as_source(path: str | Path, *, label: str | None = None) -> Source:
    """The ingest :class:`Source` of one raster file; a missing CRS is allowed."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{p} does not exist")
    s = _raster_source(p, label=label, group="finetune")
    return _PlainSource(**{k: getattr(s, k) for k in s.__dataclass_fields__})


@dataclass
class TaskChips:
    """Raw chips and their targets.

    ``pixels`` ``[N, C, S, S]`` raw; ``valid`` ``[N, S, S]``; ``targets``: class index ``[N]``
    (int64), multi-hot ``[N, K]`` (float32), value ``[N]`` (float32), class mask ``[N, S, S]``
    (int64) or value mask ``[N, S, S]`` (float32, NaN = no target); ``groups`` the split unit.
    ``normalisation``: how bands and normaliser were decided (:func:`decision`), kept in the
    head's ``head.json``.
    """

    pixels: np.ndarray
    valid: np.ndarray
    targets: np.ndarray
    groups: list[str]
    sources: list[str]
    windows: list[Window]
    time: np.ndarray  # [N, 4]
    latlon: np.ndarray  # [N, 4]
    sensor: str
    bands: list[str]
    waves: list[float]
    gsd: float
    normaliser: Normaliser
    classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    normalisation: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pixels)

    def normalised(self, idx) -> np.ndarray:
        """Normalised float32 chips ``[n, C, S, S]`` (nodata -> 0)."""
        return self.normaliser(self.pixels[idx], self.valid[idx][:, None])

    def subset(self, idx: np.ndarray) -> TaskChips:
        """The chips ``idx`` (same sensor, bands, normaliser)."""
        idx = np.asarray(idx)
        pick = idx.tolist()
        return TaskChips(
            self.pixels[idx],
            self.valid[idx],
            self.targets[idx],
            [self.groups[i] for i in pick],
            [self.sources[i] for i in pick],
            [self.windows[i] for i in pick],
            self.time[idx],
            self.latlon[idx],
            self.sensor,
            self.bands,
            self.waves,
            self.gsd,
            self.normaliser,
            self.classes,
            list(self.notes),
            dict(self.normalisation),
        )


def _params(
    chip_size: int,
    sensor: str | None,
    bands: list[str] | None,
    stride: int | None = None,
    stats: str = "auto",
) -> IngestParams:
    return IngestParams.from_options(  # checked as ingest checks them (e.g. --stats)
        chip_size=chip_size, stride=stride, sensor=sensor, bands=bands, stats=stats
    )


def decision(stats: str, record: NormalisationRecord | None) -> dict:
    """The normalisation decision of a task's chips: the policy
    (:func:`~clay_search.model.normalise.normalisation_policy`: ``stats`` mode, the weights'
    record digest, the rules' version) and the record itself (``record_config``), so predict
    plans new imagery with the same bands."""
    used = record if stats == "auto" else None
    return {
        **normalisation_policy(stats, used),
        "record_config": used.to_config() if used is not None else None,
    }


def _plan_all(
    sources: list[Source],
    params: IngestParams,
    registry: SensorRegistry,
    normaliser: Normaliser | None,
    record: NormalisationRecord | None = None,
) -> tuple[list[SourcePlan], Normaliser]:
    """Plan every source as ingest does (bands the weights' ``record`` knows are kept) and
    decide one normaliser for them all (ingest's decision, one group) unless given."""
    plans = [plan_source(s, registry, params, record=record) for s in sources]
    first = plans[0]
    for p in plans[1:]:
        if (p.bands.sensor.name, p.bands.band_names) != (
            first.bands.sensor.name,
            first.bands.band_names,
        ):
            raise BandMismatchError(
                f"{p.source.display} has {p.bands.sensor.name} bands {p.bands.band_names} but "
                f"{first.source.display} has {first.bands.sensor.name} "
                f"{first.bands.band_names}; one task trains on one band set (pass "
                "--sensor/--bands, or split the data)"
            )
    if normaliser is None:
        with ReaderPool(nodata=params.nodata) as pool:
            normaliser = decide_normaliser(
                plans, params.stats, params.chip_size, pool, record=record
            )
    return plans, normaliser


def _encodings(plans_of_chips: list[SourcePlan], lonlats: list) -> tuple[np.ndarray, np.ndarray]:
    t = encode_time([p.datetime for p in plans_of_chips]).numpy()
    ll = encode_latlon(lonlats).numpy()
    return t.astype(np.float32), ll.astype(np.float32)


def chip_gsd(plan: SourcePlan, size: int, whole: bool) -> float:
    """GSD of a chip: a whole file resampled to ``size`` px has coarser pixels (as ingest says
    for labelled chips)."""
    if plan.whole or not whole:
        return plan.gsd
    return float(f"{plan.gsd * max(plan.meta.width, plan.meta.height) / size:.3g}")


def _whole_chip(reader: SourceReader, plan: SourcePlan, size: int):
    m = plan.meta
    return reader.read(Window(0, 0, m.width, m.height), plan.bands.indices, out_size=size)


def _chip_set(
    plans: list[SourcePlan], norm: Normaliser, size: int, targets, groups, classes=None, notes=None
) -> TaskChips:
    pixels, valid, lonlats = [], [], []
    for p in plans:
        with SourceReader(p.source) as r:
            raw, v = _whole_chip(r, p, size)
        pixels.append(raw)
        valid.append(v)
        full = Window(0, 0, p.meta.width, p.meta.height)
        lonlats.append(footprints(p.meta.crs, p.meta.transform, [full])[0][2])
    t, ll = _encodings(plans, lonlats)
    first = plans[0]
    return TaskChips(
        np.stack(pixels),
        np.stack(valid),
        targets,
        groups,
        [p.source.display for p in plans],
        [Window(0, 0, p.meta.width, p.meta.height) for p in plans],
        t,
        ll,
        first.bands.sensor.name,
        first.bands.band_names,
        [b.wavelength for b in first.bands.bands],
        float(np.median([chip_gsd(p, size, True) for p in plans])),
        norm,
        classes,
        notes or [],
    )


def _read_labels_csv(path: Path) -> dict[str, tuple[str, ...]]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise SourceNotFoundError(f"labels file {path} cannot be read: {e}") from e
    if not rows or not {"source", "labels"} <= set(rows[0]):
        raise TrainingDataError(
            f"{path} must be a CSV with columns source,labels (labels joined with ';')"
        )
    out = {}
    for r in rows:
        src = Path(r["source"])
        src = src if src.is_absolute() else path.parent / src
        out[str(src)] = tuple(sorted(x.strip() for x in r["labels"].split(";") if x.strip()))
    return out


def read_labelled_folder(
    data: str | Path,
    *,
    chip_size: int = 64,
    sensor: str | None = None,
    bands: list[str] | None = None,
    labels_csv: str | Path | None = None,
    normaliser: Normaliser | None = None,
    registry: SensorRegistry | None = None,
    classes: Sequence[str] | None = None,
    record: NormalisationRecord | None = None,
    stats: str = "auto",
) -> TaskChips:
    """Chips of ``DATA/<Class>/*`` (single-label) or of a labels CSV (multi-label when any row
    has several labels). Every file is one chip, resampled to ``chip_size`` as ingest does for
    labelled chips. ``classes`` fixes the class list (a head's); otherwise sorted names.
    ``record``/``stats``: plan and normalise as ingest with those weights does (module doc)."""
    registry = registry or SensorRegistry.default()
    params = _params(chip_size, sensor, bands, stats=stats)
    data = Path(data)
    if labels_csv is not None:
        table = _read_labels_csv(Path(labels_csv))
        sources = [as_source(s) for s in table]
        labels = list(table.values())
        multi = True
    else:
        if not data.is_dir():
            raise SourceNotFoundError(f"{data} is not a folder of class folders")
        dirs = sorted(d for d in data.iterdir() if d.is_dir() and not d.name.startswith("."))
        with_files = [d for d in dirs if any(f.suffix.lower() in RASTER_EXTS for f in d.iterdir())]
        if len(with_files) < 2:
            raise TrainingDataError(
                f"{data} has {len(with_files)} class folder(s) with images "
                f"({', '.join(d.name for d in with_files) or 'none'}); a classifier needs at "
                "least two classes: DATA/<Class>/*.tif|png|jpg"
            )
        found = [s for s in discover([str(data)]) if isinstance(s, Source)]
        sources = [as_source(s.paths[0], label=s.label) for s in found if s.label]
        labels = [(s.label,) for s in sources]
        multi = False
    if not sources:
        raise TrainingDataError(f"no labelled chips found in {labels_csv or data}")
    names = list(classes) if classes is not None else sorted({c for lab in labels for c in lab})
    unknown = sorted({c for lab in labels for c in lab} - set(names))
    if unknown:
        raise TrainingDataError(
            f"labels {unknown[:10]} are not classes of the head ({names}); predict only the "
            "classes it was trained on"
        )
    if not multi and len(names) < 2:
        raise TrainingDataError("a classifier needs at least two classes")
    index = {c: i for i, c in enumerate(names)}
    if multi:
        y = np.zeros((len(labels), len(names)), np.float32)
        for i, lab in enumerate(labels):
            y[i, [index[c] for c in lab]] = 1.0
    else:
        y = np.array([index[lab[0]] for lab in labels], np.int64)
    plans, norm = _plan_all(sources, params, registry, normaliser, record)
    groups = [Path(p.source.paths[0]).stem for p in plans]
    chips = _chip_set(plans, norm, chip_size, y, groups, names)
    chips.normalisation = decision(stats, record)
    return chips


def read_target_table(
    table: str | Path,
    *,
    column: str = "value",
    chip_size: int = 64,
    sensor: str | None = None,
    bands: list[str] | None = None,
    normaliser: Normaliser | None = None,
    registry: SensorRegistry | None = None,
    record: NormalisationRecord | None = None,
    stats: str = "auto",
) -> TaskChips:
    """Chips listed in a CSV / Parquet / GeoParquet (``source`` column, paths relative to the
    table's folder) with one value each (``column``): per-chip regression. ``record``/``stats``:
    as :func:`read_labelled_folder`."""
    import pandas as pd

    path = Path(table)
    if not path.exists():
        raise SourceNotFoundError(f"targets table {path} does not exist")
    df = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if "source" not in df.columns or column not in df.columns:
        raise TrainingDataError(
            f"{path} needs a 'source' column and a {column!r} column (have {list(df.columns)}); "
            "name the value column with --target-column"
        )
    vals = pd.to_numeric(df[column], errors="coerce")
    bad = df["source"][vals.isna()].tolist()
    if bad:
        raise TrainingDataError(f"{path}: no numeric {column!r} for {bad[:5]}")
    srcs = [Path(s) if Path(s).is_absolute() else path.parent / s for s in df["source"]]
    sources = [as_source(s) for s in srcs]
    params = _params(chip_size, sensor, bands, stats=stats)
    registry = registry or SensorRegistry.default()
    plans, norm = _plan_all(sources, params, registry, normaliser, record)
    groups = [Path(s).stem for s in srcs]
    chips = _chip_set(plans, norm, chip_size, vals.to_numpy(np.float32), groups)
    chips.normalisation = decision(stats, record)
    return chips


def read_pairs_csv(path: str | Path) -> list[tuple[Path, Path]]:
    """``image,mask`` rows of a CSV (paths relative to the CSV's folder)."""
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError(f"pairs file {path} does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise TrainingDataError(f"{path} must be a CSV with columns image,mask")

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else path.parent / q

    return [(rel(r["image"]), rel(r["mask"])) for r in rows]


def match_by_stem(images: str | Path, masks: str | Path) -> list[tuple[Path, Path]]:
    """Image and mask files of two folders paired by file stem (unmatched ones are an error)."""

    def files(d: Path) -> dict[str, Path]:
        if not d.is_dir():
            raise SourceNotFoundError(f"{d} is not a folder")
        return {f.stem: f for f in sorted(d.iterdir()) if f.suffix.lower() in RASTER_EXTS}

    im, ma = files(Path(images)), files(Path(masks))
    missing = sorted(set(im) - set(ma))
    if missing:
        raise TrainingDataError(
            f"no mask in {masks} for images {missing[:5]} (masks are matched by file stem)"
        )
    if not im:
        raise TrainingDataError(f"no images in {images}")
    return [(im[k], ma[k]) for k in sorted(im)]


def _tile_groups(windows: list[Window], width: int, height: int, stem: str) -> list[str]:
    """A single image is split by 2x2 tiles (quadrants), by the chip's centre."""
    out = []
    for w in windows:
        cy = int(w.row_off) + int(w.height) / 2
        cx = int(w.col_off) + int(w.width) / 2
        out.append(f"{stem}#tile{int(cy >= height / 2)}{int(cx >= width / 2)}")
    return out


def read_pairs(
    pairs: Sequence[tuple[str | Path, str | Path]],
    *,
    kind: str = "class",
    chip_size: int = 64,
    stride: int | None = None,
    sensor: str | None = None,
    bands: list[str] | None = None,
    ignore_index: int | None = None,
    classes: Sequence[int] | None = None,
    normaliser: Normaliser | None = None,
    registry: SensorRegistry | None = None,
    max_nodata: float = 0.5,
    record: NormalisationRecord | None = None,
    stats: str = "auto",
) -> TaskChips:
    """Image/mask pairs cut into ``chip_size`` chips every ``stride`` px (default: half a chip,
    so chips overlap), masks cut alike. ``kind`` ``class`` (int class index masks) or ``value``
    (float target rasters; their nodata -> NaN). ``classes`` lists the allowed class values
    (others are an error unless ``ignore_index``); default: those found. ``record``/``stats``:
    as :func:`read_labelled_folder`.
    """
    if not pairs:
        raise TrainingDataError("no image/mask pairs given")
    stride = stride or max(chip_size // 2, 1)
    params = _params(chip_size, sensor, bands, stride=stride, stats=stats)
    registry = registry or SensorRegistry.default()
    sources = [as_source(i) for i, _ in pairs]
    plans, norm = _plan_all(sources, params, registry, normaliser, record)
    one_image = len(pairs) == 1
    pixels, valid, targets, groups, srcs, wins, lonlats, chip_plans = ([] for _ in range(8))
    for plan, (img, mask) in zip(plans, pairs, strict=True):
        msrc = as_source(mask)
        with SourceReader(msrc) as mr:
            mm = mr.meta
            if (mm.width, mm.height) != (plan.meta.width, plan.meta.height):
                raise TrainingDataError(
                    f"mask {mask} is {mm.width}x{mm.height} px but image {img} is "
                    f"{plan.meta.width}x{plan.meta.height}; masks must be the image's size "
                    "(same grid, one class index per pixel)"
                )
            windows = chip_windows(plan.meta.width, plan.meta.height, chip_size, stride)
            with SourceReader(plan.source) as r:
                reads = r.read_many(windows, plan.bands.indices)
            mreads = mr.read_many(windows, [0])
        stem = Path(img).stem
        gs = (
            _tile_groups(windows, plan.meta.width, plan.meta.height, stem)
            if one_image
            else [stem] * len(windows)
        )
        fps = footprints(
            plan.meta.crs, plan.meta.transform, windows, size=(plan.meta.width, plan.meta.height)
        )
        for k, ((raw, v), (mraw, mv)) in enumerate(zip(reads, mreads, strict=True)):
            if 1.0 - float(v.mean()) > max_nodata:
                continue
            if kind == "class":
                t = np.where(mv, mraw[0], -1).astype(np.int64)
            else:
                t = np.where(mv & v, mraw[0].astype(np.float32), np.nan).astype(np.float32)
            pixels.append(raw)
            valid.append(v)
            targets.append(t)
            groups.append(gs[k])
            srcs.append(str(img))
            wins.append(windows[k])
            lonlats.append(fps[k][2])
            chip_plans.append(plan)
    if not pixels:
        raise TrainingDataError("every chip of the images is mostly nodata; nothing to train on")
    y = np.stack(targets)
    names = None
    if kind == "class":
        outside = y < 0  # padding past the image edge
        present = sorted(int(c) for c in np.unique(y[~outside]) if c != ignore_index)
        if classes is None:
            classes = present
        allowed = {int(c) for c in classes}
        unknown = sorted(set(present) - allowed)
        if unknown:
            raise TrainingDataError(
                f"masks hold class values {unknown} that are not classes of this task "
                f"({sorted(allowed)}); mark them with --ignore-index or fix the masks"
            )
        if len(allowed) < 2:
            raise TrainingDataError(
                f"the masks hold {len(allowed)} class value(s) ({sorted(allowed)}); "
                "segmentation needs at least two"
            )
        lut = {c: i for i, c in enumerate(sorted(allowed))}
        mapped = np.full(y.shape, -1, np.int64)
        for c, i in lut.items():
            mapped[y == c] = i
        y = mapped  # -1 = ignored (padding, --ignore-index)
        names = [str(c) for c in sorted(allowed)]
    t, ll = _encodings(chip_plans, lonlats)
    first = plans[0]
    return TaskChips(
        np.stack(pixels),
        np.stack(valid),
        y,
        groups,
        srcs,
        wins,
        t,
        ll,
        first.bands.sensor.name,
        first.bands.band_names,
        [b.wavelength for b in first.bands.bands],
        float(np.median([p.gsd for p in plans])),
        norm,
        names,
        normalisation=decision(stats, record),
    )


def split_holdout(
    chips: TaskChips, fraction: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: whole groups (images, or tiles of a single image) are held out,
    chosen by a seeded hash; train chips that overlap a held-out chip of the same image are
    dropped, so no pixel is on both sides."""
    groups = sorted(set(chips.groups))
    if fraction <= 0 or len(groups) < 2:
        return np.arange(len(chips)), np.zeros(0, np.int64)
    key = {g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest() for g in groups}
    order = sorted(groups, key=key.__getitem__)
    n_val = min(max(1, int(round(fraction * len(groups)))), len(groups) - 1)
    held = set(order[:n_val])
    val = np.array([i for i, g in enumerate(chips.groups) if g in held], np.int64)
    train = []
    by_src: dict[str, list[Window]] = {}
    for i in val:
        by_src.setdefault(chips.sources[i], []).append(chips.windows[i])
    for i, g in enumerate(chips.groups):
        if g in held:
            continue
        w = chips.windows[i]
        if any(_overlaps(w, o) for o in by_src.get(chips.sources[i], [])):
            continue
        train.append(i)
    return np.array(train, np.int64), val


def _overlaps(a: Window, b: Window) -> bool:
    return not (
        a.col_off + a.width <= b.col_off
        or b.col_off + b.width <= a.col_off
        or a.row_off + a.height <= b.row_off
        or b.row_off + b.height <= a.row_off
    )
