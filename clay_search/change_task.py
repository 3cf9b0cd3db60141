"""Supervised change detection end to end: read before/after/mask triples, train a change head,
predict a change-probability GeoTIFF from two dates.

- :func:`read_change_csv`: ``before,after,mask`` rows (paths relative to the CSV);
- :func:`check_grid`: two rasters of one pair must share one pixel grid (size, CRS, transform);
- :func:`read_change_pairs`: both dates cut into the same chips with ingest's reader and one
  normaliser (decided over every image of both dates), masks cut alike ->
  :class:`ChangeChips` (pixels ``[N, 2C, S, S]``: before bands then after bands);
- :func:`finetune_change`: :func:`clay_search.tasks.run_task` with the siamese
  :class:`~clay_search.model.change_head.ChangeModel` (head folder task ``change``);
- :func:`predict_change`: the head over a before/after pair -> one tiled float32 GeoTIFF of
  change probability on the before image's grid, written strip by strip by
  :func:`clay_search.predict.predict_raster` (bounded memory, blended overlapping windows).

The held-out split is by whole pair (each pair is a place), or by 2 x 2 tiles of a single pair.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clay_search.errors import HeadError, SourceNotFoundError, TrainingDataError
from clay_search.ingest.raster import SourceReader
from clay_search.ingest.taskdata import TaskChips, _tile_groups, as_source, read_pairs
from clay_search.model.backbone import Metadata
from clay_search.model.encoding import encode_latlon, encode_time
from clay_search.model.headfile import HeadSpec, load_head
from clay_search.model.normalise import NormalisationRecord, Normaliser
from clay_search.model.sensors import SensorRegistry

Triple = tuple[Path, Path, Path]


class ChangeChips(TaskChips):
    """:class:`TaskChips` of pairs: ``pixels`` ``[N, 2C, S, S]`` (before bands, then after),
    ``valid`` ``[N, S, S]`` (valid on both dates), ``time`` ``[N, 8]`` (both dates),
    ``targets`` ``[N, S, S]`` (0 no change, 1 change, -1 ignored); ``bands``/``waves``/the
    normaliser describe one date's C bands."""

    def normalised(self, idx) -> np.ndarray:
        """Normalised float32 pairs ``[n, 2C, S, S]``: each date with the one normaliser."""
        c = len(self.bands)
        x, v = self.pixels[idx], self.valid[idx][:, None]
        return np.concatenate((self.normaliser(x[:, :c], v), self.normaliser(x[:, c:], v)), 1)


def read_change_csv(path: str | Path) -> list[Triple]:
    """``before,after,mask`` rows of a CSV (paths relative to the CSV's folder)."""
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError(f"pairs file {path} does not exist")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"before", "after", "mask"} <= set(rows[0]):
        have = list(rows[0]) if rows else "no rows"
        raise TrainingDataError(
            f"{path} must be a CSV with columns before,after,mask (one row per place: the "
            f"two dates' images and the 0/1 change mask); it has {have}"
        )

    def rel(p: str | None, col: str, n: int) -> Path:
        if not p:
            raise TrainingDataError(f"{path} row {n}: empty {col!r}")
        q = Path(p)
        return q if q.is_absolute() else path.parent / q

    return [
        (rel(r["before"], "before", n), rel(r["after"], "after", n), rel(r["mask"], "mask", n))
        for n, r in enumerate(rows, start=2)
    ]


def _grid(path: Path):
    with SourceReader(as_source(path)) as r:
        return r.meta


def check_grid(first: str | Path, second: str | Path, *, what: str = "after") -> None:
    """Refuse two rasters that are not on one pixel grid (size; CRS and transform when both are
    georeferenced; a raster without a georeference is taken to be on the other's grid)."""
    a, b = _grid(Path(first)), _grid(Path(second))
    fix = (
        "a change pair must share one pixel grid: warp one onto the other first, e.g. "
        f"`rio warp {second} aligned.tif --like {first}`"
    )
    if (a.width, a.height) != (b.width, b.height):
        raise TrainingDataError(
            f"{what} {second} is {b.width}x{b.height} px but before {first} is "
            f"{a.width}x{a.height} px; {fix}"
        )
    if a.georeferenced and b.georeferenced:
        if a.crs != b.crs:
            raise TrainingDataError(
                f"{what} {second} is in {b.crs} but before {first} is in {a.crs}; {fix}"
            )
        ta, tb = np.asarray(a.transform)[:6], np.asarray(b.transform)[:6]
        tol = 0.01 * max(abs(float(a.transform.a)), abs(float(a.transform.e)), 1e-12)
        if not np.allclose(ta, tb, rtol=0.0, atol=tol):
            raise TrainingDataError(
                f"{what} {second} is on another grid than before {first} (origin or pixel "
                f"size differ: {tuple(round(float(v), 9) for v in tb)} vs "
                f"{tuple(round(float(v), 9) for v in ta)}); {fix}"
            )


def read_change_pairs(
    triples: Sequence[tuple[str | Path, str | Path, str | Path]],
    *,
    chip_size: int = 64,
    stride: int | None = None,
    sensor: str | None = None,
    bands: list[str] | None = None,
    ignore_index: int | None = None,
    normaliser: Normaliser | None = None,
    registry: SensorRegistry | None = None,
    record: NormalisationRecord | None = None,
    stats: str = "auto",
) -> ChangeChips:
    """Before/after/mask triples cut into ``chip_size`` chips every ``stride`` px (default half
    a chip). Masks are 0 (no change) / 1 (change); ``ignore_index`` marks unlabelled pixels.
    Every pair's grids are checked first (:func:`check_grid`). ``record``/``stats``: plan and
    normalise as ingest with those weights does (:mod:`clay_search.ingest.taskdata`)."""
    if not triples:
        raise TrainingDataError("no before/after/mask rows given")
    trip = [(Path(b), Path(a), Path(m)) for b, a, m in triples]
    for b, a, m in trip:
        for p in (b, a, m):
            if not p.exists():
                raise SourceNotFoundError(f"{p} does not exist (a path of the pairs table)")
        if b.resolve() == a.resolve():
            raise TrainingDataError(f"before and after are the same file {b}; give two dates")
        check_grid(b, a, what="after")
        check_grid(b, m, what="mask")
    flat = [x for b, a, m in trip for x in ((b, m), (a, m))]
    tc = read_pairs(
        flat,
        kind="class",
        chip_size=chip_size,
        stride=stride,
        sensor=sensor,
        bands=bands,
        ignore_index=ignore_index,
        classes=[0, 1],
        normaliser=normaliser,
        registry=registry,
        record=record,
        stats=stats,
    )
    where = {
        (src, int(w.row_off), int(w.col_off)): i
        for i, (src, w) in enumerate(zip(tc.sources, tc.windows, strict=True))
    }
    pick_b, pick_a, groups = [], [], []
    for b, a, _m in trip:
        keys = [k for k in where if k[0] == str(b)]
        idx = [
            (where[k], where[(str(a), k[1], k[2])]) for k in keys if (str(a), k[1], k[2]) in where
        ]
        if not idx:
            continue
        pick_b += [i for i, _ in idx]
        pick_a += [j for _, j in idx]
        if len(trip) == 1:
            meta = _grid(b)
            groups += _tile_groups([tc.windows[i] for i, _ in idx], meta.width, meta.height, b.stem)
        else:
            groups += [str(b)] * len(idx)
    if not pick_b:
        raise TrainingDataError("no chip is valid on both dates; nothing to train on")
    ib, ia = np.array(pick_b), np.array(pick_a)
    valid = tc.valid[ib] & tc.valid[ia]
    y = np.where(valid, tc.targets[ib], -1).astype(np.int64)
    return ChangeChips(
        np.concatenate((tc.pixels[ib], tc.pixels[ia]), axis=1),
        valid,
        y,
        groups,
        [tc.sources[i] for i in pick_b],
        [tc.windows[i] for i in pick_b],
        np.concatenate((tc.time[ib], tc.time[ia]), axis=1),
        tc.latlon[ib],
        tc.sensor,
        tc.bands,
        tc.waves,
        tc.gsd,
        tc.normaliser,
        ["no change", "change"],
        list(tc.notes),
        dict(tc.normalisation),
    )


def finetune_change(
    out: str | Path,
    *,
    pairs: str | Path | Sequence[tuple[str | Path, str | Path, str | Path]],
    chip_size: int = 64,
    stride: int | None = None,
    sensor: str | None = None,
    bands: list[str] | None = None,
    fusion: str = "concat+diff",
    ignore_index: int | None = None,
    class_weights: str | list[float] | None = "balanced",
    stats: str = "auto",
    **kw,
):
    """Train a change head on ``pairs`` (a ``before,after,mask`` CSV or triples) and write the
    head folder ``out``; returns :class:`clay_search.tasks.TaskRun`. ``kw``: the options of
    :func:`clay_search.tasks.run_task` (``freeze``, ``epochs``, ``lr``, ``val_fraction``, ...)."""
    from clay_search.model.change_head import FUSIONS
    from clay_search.tasks import chip_reading, run_task, task_backbone

    if fusion not in FUSIONS:
        raise TrainingDataError(f"--fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    triples = read_change_csv(pairs) if isinstance(pairs, str | Path) else list(pairs)
    bb = task_backbone(**kw)
    reading = chip_reading(bb, chip_size=chip_size, sensor=sensor, bands=bands, stats=stats)
    chips = read_change_pairs(triples, stride=stride, ignore_index=ignore_index, **reading)
    return run_task(
        chips,
        "change",
        out,
        kind="change",
        chip_size=chip_size,
        ignore_index=ignore_index,
        class_weights=class_weights,
        model_options={"fusion": fusion},
        backbone=bb,
        **kw,
    )


class _PairReader:
    """Both dates' readers; ``read_many`` gives ``[2C, S, S]`` raw chips valid on both."""

    def __init__(self, before, after) -> None:
        self.plans = (before, after)
        self.readers = [SourceReader(p.source) for p in self.plans]

    def __enter__(self) -> _PairReader:
        for r in self.readers:
            r.open()
        return self

    def __exit__(self, *exc) -> None:
        for r in self.readers:
            r.__exit__(*exc)

    def read_many(self, windows, bands=None) -> list[tuple[np.ndarray, np.ndarray]]:
        rb, ra = (
            r.read_many(windows, p.bands.indices)
            for r, p in zip(self.readers, self.plans, strict=True)
        )
        return [
            (np.concatenate((xb, xa), axis=0), vb & va)
            for (xb, vb), (xa, va) in zip(rb, ra, strict=True)
        ]


class _ChangeRunner:
    """Normalise both dates with the head's normaliser; change probability ``[B, 1, S, S]``."""

    def __init__(self, model, spec: HeadSpec, device, when_before, when_after) -> None:
        self.model, self.device = model, torch.device(device)
        self.norm = spec.make_normaliser()
        self.c = len(spec.bands)
        self.waves = torch.tensor(spec.waves, dtype=torch.float32)
        self.when = (when_before, when_after)

    def __call__(self, raw, valid, gsd, datetimes, lonlats) -> np.ndarray:
        v = valid[:, None]
        x = np.concatenate((self.norm(raw[:, : self.c], v), self.norm(raw[:, self.c :], v)), 1)
        n = len(raw)
        time = torch.cat((encode_time([self.when[0]] * n), encode_time([self.when[1]] * n)), dim=1)
        meta = Metadata(
            self.waves.to(self.device),
            float(gsd),
            time.to(self.device),
            encode_latlon(lonlats).to(self.device),
        )
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device), meta).float()
        return torch.softmax(out, 1)[:, 1:2].cpu().numpy()


def predict_change(
    head: str | Path,
    before: str | Path,
    after: str | Path,
    out: str | Path,
    *,
    weights=None,
    device: str = "cpu",
    overlap: float = 0.5,
    batch_size: int = 16,
    bands: list[str] | None = None,
):
    """A change head over one before/after pair -> ``out``: float32 GeoTIFF, the probability
    of change per pixel (0..1; NaN where either date has no data), on the before image's grid.
    Returns :class:`clay_search.predict.PredictReport`."""
    from clay_search.predict import PredictReport, _plan, predict_raster

    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise HeadError(f"--out {out}: a change head writes one GeoTIFF (.tif)")
    if not 0.0 <= overlap < 1.0:
        raise HeadError(f"--overlap {overlap} must be in [0, 1)")
    spec_model, spec = load_head(head, weights=weights, device=device)
    if spec.task != "change":
        raise HeadError(
            f"{head} is a {spec.task} head, not a change head; --before/--after take a head "
            "trained with `clay-search finetune change`"
        )
    b, a = Path(before), Path(after)
    for p in (b, a):
        if not p.exists():
            raise SourceNotFoundError(f"{p} does not exist")
    try:
        check_grid(b, a, what="after")
    except TrainingDataError as e:
        raise HeadError(str(e)) from None
    registry = SensorRegistry.default()
    pb = _plan(as_source(b), spec, registry, bands=bands)
    pa = _plan(as_source(a), spec, registry, bands=bands)
    out.parent.mkdir(parents=True, exist_ok=True)
    predict_raster(
        spec_model,
        spec,
        pb,
        out,
        device=device,
        overlap=overlap,
        batch_size=batch_size,
        reader=_PairReader(pb, pa),
        runner=_ChangeRunner(spec_model, spec, device, pb.datetime, pa.datetime),
    )
    report = PredictReport()
    report.written.append(str(out))
    return report
