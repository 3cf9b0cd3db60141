"""The ingest run: sources in, chips read in worker threads, embedded in batches, written.

Reading and chipping (rasterio releases the GIL) run in a thread pool a few tasks ahead of the
inference loop, which batches chips of one sensor/band set/GSD and writes rows in commits of
``flush_rows``. Chip ids already in the store are skipped before anything is read.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clay_search.errors import NoDataError
from clay_search.geo import footprints
from clay_search.ingest.chips import chip_id, window_json
from clay_search.ingest.imagery import embed_chips
from clay_search.ingest.manifest import RunManifest
from clay_search.ingest.params import THUMBNAIL_SIZE, IngestParams
from clay_search.ingest.plan import (
    SourcePlan,
    decide_normaliser,
    plan_source,
    thumbnail_stretch,
)
from clay_search.ingest.readers import ReaderPool
from clay_search.ingest.report import IngestReport, SourceReport
from clay_search.ingest.sources import Source, SourceFailure
from clay_search.ingest.thumbnails import thumbnails_png
from clay_search.ingest.writer import ChipWriter
from clay_search.model.normalise import normalisation_policy
from clay_search.places import place_id_for_window

if TYPE_CHECKING:
    from rasterio.windows import Window

    from clay_search.ingest.datetimes import DatesFile
    from clay_search.model.embedder import Embedder
    from clay_search.model.normalise import NormalisationRecord
    from clay_search.model.sensors import SensorRegistry

log = logging.getLogger("clay_search.ingest")
TASK_BYTES = 32 * 2**20  # raw pixels per read task
TASK_CHIPS = 128  # chips per read task (a task's windows are read in a few blocks)


@dataclass
class ChipRead:
    """One chip read by a worker, ready for the model."""

    chip_id: str
    raw: np.ndarray
    valid: np.ndarray
    row: dict
    lonlat: tuple[float, float] | None


@dataclass
class TaskResult:
    """What a worker returns for a group of windows of one source."""

    index: int  # the plan
    chips: list[ChipRead] = field(default_factory=list)
    nodata: int = 0
    error: BaseException | None = None


def _read_task(
    plan: SourcePlan,
    index: int,
    items: list[tuple[str, object]],
    params: IngestParams,
    readers: ReaderPool,
) -> TaskResult:
    """Read, chip and describe a group of windows of one source (in a worker thread).

    The windows are read in strips (one file read per row of chips), and the footprints and
    thumbnails of the task's chips are made in one vectorised call each.
    """
    res = TaskResult(index)
    src, m = plan.source, plan.meta
    try:
        with readers.use(src) as reader:
            if plan.whole:
                reads = [reader.read(win, plan.bands.indices, params.chip_size) for _, win in items]
            else:
                reads = reader.read_many([win for _, win in items], plan.bands.indices)
        keep = []
        for k, (_raw, valid) in enumerate(reads):
            if 1.0 - float(valid.mean()) > params.max_nodata:
                res.nodata += 1
            else:
                keep.append(k)
        if not keep:
            return res
        fps = footprints(
            m.crs,
            m.transform,
            [items[k][1] for k in keep],
            size=(m.width, m.height),
            valid=[reads[k][1] for k in keep],
        )
        log_scale = plan.normaliser is not None and plan.normaliser.transform == "db"
        thumbs: list[bytes] = [b""] * len(keep)
        by_shape: dict[tuple, list[int]] = {}
        for j, k in enumerate(keep):
            by_shape.setdefault(reads[k][0].shape, []).append(j)
        for js in by_shape.values():
            pngs = thumbnails_png(
                [reads[keep[j]][0] for j in js],
                [reads[keep[j]][1] for j in js],
                plan.rgb,
                size=THUMBNAIL_SIZE,
                log=log_scale,
                stretch=plan.stretch,
            )
            for j, png in zip(js, pngs, strict=True):
                thumbs[j] = png
        crs = m.crs.to_string() if m.crs is not None else None
        common = {
            "datetime": plan.datetime,
            "sensor": plan.bands.sensor.name,
            "gsd": plan.gsd,
            "source": src.display,
            "item_id": src.item_id,
            "crs": crs,
            "label": src.label,
        }
        for j, k in enumerate(keep):
            cid, win = items[k]
            raw, valid = reads[k]
            wkb, bounds, lonlat = fps[j]
            minx, miny, maxx, maxy = bounds if bounds else (None,) * 4
            row = {
                "chip_id": cid,
                "geometry": wkb,
                "minx": minx,
                "miny": miny,
                "maxx": maxx,
                "maxy": maxy,
                **common,
                "window": window_json(win),
                "thumbnail": thumbs[j],
                "place_id": place_id_for_window(m.crs, m.transform, win),
            }
            res.chips.append(ChipRead(cid, raw, valid, row, lonlat))
    except Exception as e:  # noqa: BLE001 - reported against the source, others continue
        res.error = e
    return res


class _Batcher:
    """Collects chips of one (group, gsd) key and embeds them in batches."""

    def __init__(self, embedder: Embedder, writer: ChipWriter, params: IngestParams) -> None:
        self.embedder, self.writer, self.params = embedder, writer, params
        self.key: tuple | None = None
        self.plan: SourcePlan | None = None
        self.chips: list[ChipRead] = []
        self.embed_seconds = 0.0
        self.embedded = 0

    def add(self, plan: SourcePlan, chip: ChipRead) -> None:
        key = (plan.group_key, plan.gsd, chip.raw.shape)
        if self.key is not None and key != self.key:
            self.flush()
        self.key, self.plan = key, plan
        self.chips.append(chip)
        if len(self.chips) >= self.params.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.chips:
            return
        chips, plan = self.chips, self.plan
        self.chips = []
        t0 = time.perf_counter()
        out = embed_chips(
            self.embedder,
            plan,
            np.stack([c.raw for c in chips]),
            np.stack([c.valid for c in chips]),
            datetimes=[c.row["datetime"] for c in chips],
            lonlats=[c.lonlat for c in chips],
            patches=self.params.patch_embeddings,
            recon_error=self.params.quality_score,
        )
        self.embed_seconds += time.perf_counter() - t0
        self.embedded += len(chips)
        for i, c in enumerate(chips):
            row = dict(c.row)
            row["embedding"] = out.embedding[i]
            if out.patches is not None:
                row["patch_embeddings"] = out.patches[i]
            if out.recon_error is not None:
                row["recon_error"] = float(out.recon_error[i])
            self.writer.add(row)


def _progress(enabled: bool):  # -> a rich Progress
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} chips/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


@dataclass
class SourceWork:
    """One planned source through the run: its plan, its report and the windows still to do."""

    plan: SourcePlan
    report: SourceReport
    todo: list[tuple[str, Window]] = field(default_factory=list)
    tasks_left: int = 0
    failed: bool = False


class RunState:
    """What a run has seen so far: the per-source reports and the failure policy.

    :meth:`fail` records a failed source; with ``fail_fast`` it raises the error instead (at the
    step that met it).
    """

    def __init__(self, report: IngestReport, params: IngestParams) -> None:
        self.report, self.params = report, params
        self.sources: list[SourceReport] = []

    def fail(self, name: str, err: BaseException, rep: SourceReport | None = None) -> None:
        """Mark ``rep`` (or a new report for ``name``) failed with ``err``."""
        rep = rep or SourceReport(name)
        if rep not in self.sources:
            self.sources.append(rep)
        rep.status, rep.error = "failed", f"{type(err).__name__}: {err}"
        log.warning("skipping %s: %s", name, rep.error)
        if self.params.fail_fast:
            raise err

    def fail_if_all_nodata(self, w: SourceWork) -> None:
        """Fail ``w``'s source once its last read task is in, when every chip was nodata (both
        engines call this after counting a task)."""
        if w.tasks_left == 0 and w.report.nodata == w.report.planned:
            name = w.plan.source.display
            self.fail(
                name,
                NoDataError(
                    f"every chip of {name} is more than {self.params.max_nodata:.0%} nodata; "
                    "nothing to ingest (check the nodata value, or raise --max-nodata)"
                ),
                w.report,
            )


def plan_sources(
    sources: Iterable[Source | SourceFailure],
    registry: SensorRegistry,
    params: IngestParams,
    state: RunState,
    dates: DatesFile | None = None,
    record: NormalisationRecord | None = None,
) -> list[SourceWork]:
    """Step 1: plan every source (metadata only); failures are recorded in ``state``.
    ``record`` (the weights' normalisation record) keeps the bands the weights know."""
    seen: set[str] = set()
    work: list[SourceWork] = []
    for s in sources:
        if isinstance(s, SourceFailure):
            state.fail(s.source, s.error)
            continue
        if s.identity in seen:
            continue
        seen.add(s.identity)
        rep = SourceReport(s.display, kind=s.kind)
        state.sources.append(rep)
        try:
            plan = plan_source(s, registry, params, dates=dates, record=record)
        except Exception as e:  # noqa: BLE001 - reported, the others continue
            state.fail(s.display, e, rep)
            continue
        rep.sensor, rep.bands = plan.bands.sensor.name, plan.bands.band_names
        rep.notes = plan.notes
        rep.datetime = plan.date.value.isoformat() if plan.date.value else None
        rep.datetime_precision, rep.datetime_from = plan.date.precision, plan.date.origin
        work.append(SourceWork(plan, rep))
    if dates is not None and (unused := dates.unused()):
        state.report.notes.append(
            f"--dates {dates.path.name}: {len(unused)} entr{'y' if len(unused) == 1 else 'ies'} "
            f"matched no source ({', '.join(unused[:5])}{', ...' if len(unused) > 5 else ''})"
        )
    return work


def choose_normalisers(
    work: list[SourceWork],
    params: IngestParams,
    readers: ReaderPool,
    state: RunState,
    record: NormalisationRecord | None = None,
) -> list[SourceWork]:
    """Step 2: one normaliser per group (a series, see ``--stats-scope``), from the weights'
    normalisation ``record`` when it fits (:func:`~clay_search.ingest.plan.decide_normaliser`);
    returns the sources that have one."""
    groups: dict[tuple, list[SourceWork]] = {}
    for w in work:
        groups.setdefault(w.plan.group_key(params.stats_scope), []).append(w)
    for members in groups.values():
        plans = [w.plan for w in members]
        broken: dict[int, BaseException] = {}
        try:
            norm = decide_normaliser(
                plans, params.stats, params.chip_size, readers, broken, record=record
            )
        except Exception as e:  # noqa: BLE001 - the group's sources fail, the others continue
            for w in members:
                state.fail(w.plan.source.display, broken.get(id(w.plan), e), w.report)
            continue
        for w in members:  # a source whose samples could not be read fails alone
            if id(w.plan) in broken:
                state.fail(w.plan.source.display, broken[id(w.plan)], w.report)
        members = [w for w in members if id(w.plan) not in broken]
        plans = [w.plan for w in members]
        first = plans[0]
        try:
            stretch = thumbnail_stretch(
                plans, params.chip_size, readers, log=norm.transform == "db"
            )
        except Exception:  # noqa: BLE001 - thumbnails fall back to a per-chip stretch
            stretch = None
        what = "series" if params.stats_scope == "series" else "group"
        shared = (
            f"shared by the {len(plans)} sources of this {what} "
            f"({first.bands.sensor.name}, {','.join(first.bands.band_names)}, "
            f"{first.meta.dtype})"
            if len(plans) > 1
            else "used by 1 source"
        )
        for p in plans:
            p.normaliser, p.stretch = norm, stretch
        key = " | ".join(
            [
                first.bands.sensor.name,
                ",".join(first.bands.band_names),
                first.meta.dtype,
                *([first.source.stats_group] if params.stats_scope == "source" else []),
            ]
        )
        state.report.normalisers[key] = {
            **norm.to_dict(),
            "notes": list(norm.notes),
            "scope": params.stats_scope,
            "shared": shared,
            "sources": [p.source.display for p in plans],
        }
        for n in norm.notes:
            state.report.notes.append(
                f"{first.source.display}: {n}"
                if len(plans) == 1
                else f"{len(plans)} sources ({shared}): {n}"
            )
    return [w for w in work if w.plan.normaliser is not None]


def list_windows(work: list[SourceWork], writer: ChipWriter, params: IngestParams) -> int:
    """Step 3: the windows of each source whose chip is not in the store yet; returns how many."""
    for w in work:
        p = w.plan
        for win in p.windows:
            cid = chip_id(
                p.source.identity,
                win,
                chip_size=params.chip_size,
                step=params.step,
                bands=p.bands.band_names,
                whole=p.whole,
            )
            if cid in writer:
                w.report.existing += 1
            else:
                w.todo.append((cid, win))
        w.report.planned = len(p.windows)
    return sum(len(w.todo) for w in work)


def _quality_choice(
    params: IngestParams, embedder: Embedder, writer: ChipWriter, report: IngestReport
) -> IngestParams:
    """``params`` with ``quality_score`` off (and a note why) when it cannot be stored."""
    if not params.quality_score:
        return params
    why = None
    if "recon_error" not in writer.schema.names:
        why = (
            "quality score not stored: this store was made before the recon_error column "
            "(ingest into a new store to score chips)"
        )
    elif not getattr(embedder, "has_decoder", False):
        note = embedder.quality_report()["note"] if hasattr(embedder, "quality_report") else ""
        why = f"quality score not computed ({note}); recon_error is null"
    if why is None:
        return params
    report.notes.append(why)
    return dataclasses.replace(params, quality_score=False)


def execute(
    sources: Iterable[Source | SourceFailure],
    store: str | Path,
    embedder: Embedder,
    registry: SensorRegistry,
    params: IngestParams,
    *,
    dates: DatesFile | None = None,
) -> IngestReport:
    """Plan, choose normalisers, list windows, read/embed/write, sync the index; returns the
    report (the run manifest is written too). Nothing is created in ``store`` when no source
    can be planned."""
    t_start = time.perf_counter()
    report = IngestReport(store=str(store), model_id=embedder.model_id)
    state = RunState(report, params)
    workers = params.reader_threads(embedder.device)
    report.workers = workers
    readers = ReaderPool(max(2, 2 * workers + 2), nodata=params.nodata)
    writer = manifest = None
    try:
        record = embedder.normalisation
        if record is None and params.stats == "auto":
            report.notes.append(
                "these weights carry no normalisation record (older clay-search weights, or an "
                "official Clay checkpoint trained with the sensor table): normalised with the "
                "sensor table's statistics where the values fit them, else the source's own"
            )
        work = plan_sources(sources, registry, params, state, dates, record=record)
        report.sources = len(state.sources)
        if not work:
            return report
        patch_dim = None
        if params.patch_embeddings:
            patch_dim = (params.chip_size // embedder.patch_size) ** 2 * embedder.token_dim
        writer = ChipWriter(
            store,
            embedder.model_id,
            embedder.dim,
            patch_dim,
            flush_rows=params.flush_rows,
            flush_seconds=params.flush_seconds,
            normalisation=normalisation_policy(params.stats, record),
        )
        for note in writer.notes:  # said once: the store records the policy from now on
            log.warning("%s", note)
            report.notes.append(note)
        params = _quality_choice(params, embedder, writer, report)
        manifest = RunManifest(
            writer.info.runs_path,
            params,
            embedder.model_id,
            precision=embedder.precision_report,
            quality=getattr(embedder, "quality_report", None),
        )
        manifest.save(report, state.sources)
        work = choose_normalisers(work, params, readers, state, record)
        total = list_windows(work, writer, params)
        if params.engine == "ray":
            from clay_search.ingest.ray_engine import read_embed_write as on_ray

            on_ray(work, writer, embedder, params, state, total=total)
        else:
            read_embed_write(
                work, writer, embedder, params, readers, state, total=total, workers=workers
            )
        readers.close()
        report.index = _sync_index(writer.info.path, report)
    finally:
        readers.close()
        report.seconds = time.perf_counter() - t_start
        report.sources_detail = state.sources
        if writer is not None:
            report.chips_written = writer.written
            report.table_version = writer.version
        if writer is not None:
            writer.close()
        if manifest is not None:
            manifest.save(report, state.sources, finished=True)
            report.manifest = str(manifest.path)
    return report


def _tasks(work: list[SourceWork], params: IngestParams) -> list[tuple[SourceWork, list]]:
    """Groups of windows of one source, read by one task (bounded by ``TASK_BYTES``)."""
    tasks = []
    for w in work:
        c = len(w.plan.bands.indices)
        per = max(
            1, min(max(params.batch_size, TASK_CHIPS), TASK_BYTES // (4 * c * params.chip_size**2))
        )
        for k in range(0, len(w.todo), per):
            tasks.append((w, w.todo[k : k + per]))
            w.tasks_left += 1
    return tasks


def read_embed_write(
    work: list[SourceWork],
    writer: ChipWriter,
    embedder: Embedder,
    params: IngestParams,
    readers: ReaderPool,
    state: RunState,
    *,
    total: int,
    workers: int,
) -> None:
    """Step 4: read tasks a few ahead of the model (threads when ``workers`` > 0), embed in
    batches, write. A task's error fails its source (the rows already written stay)."""
    batcher = _Batcher(embedder, writer, params)
    tasks = _tasks(work, params)
    index = {id(w): i for i, w in enumerate(work)}
    t0 = time.perf_counter()
    done = 0
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
    ahead = max(2, 2 * workers)
    queue: deque[tuple[SourceWork, Future | TaskResult]] = deque()
    it = iter(tasks)

    def submit_next() -> bool:
        nxt = next(it, None)
        if nxt is None:
            return False
        w, items = nxt
        args = (w.plan, index[id(w)], items, params, readers)
        queue.append((w, _read_task(*args) if pool is None else pool.submit(_read_task, *args)))
        return True

    with _progress(params.progress) as bar:
        task_id = bar.add_task("ingest", total=total, rate="-")
        try:
            while len(queue) < ahead and submit_next():
                pass
            while queue:
                w, head = queue.popleft()
                res = head.result() if isinstance(head, Future) else head
                submit_next()
                w.tasks_left -= 1
                if w.failed:
                    continue
                if res.error is not None:
                    w.failed = True
                    batcher.flush()
                    writer.flush()
                    state.fail(w.plan.source.display, res.error, w.report)
                    continue
                w.report.nodata += res.nodata
                for chip in res.chips:
                    batcher.add(w.plan, chip)
                w.report.written += len(res.chips)
                done += len(res.chips) + res.nodata
                rate = done / max(time.perf_counter() - t0, 1e-9)
                bar.update(task_id, advance=len(res.chips) + res.nodata, rate=f"{rate:.1f}")
                state.fail_if_all_nodata(w)
            batcher.flush()
            writer.flush()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    state.report.embed_seconds = batcher.embed_seconds
    state.report.chips_nodata = sum(w.report.nodata for w in work)
    state.report.chips_existing = sum(w.report.existing for w in work)


def _sync_index(store: Path, report: IngestReport) -> dict | None:
    """Bring the FAISS index up to the table version (see clay_search.index)."""
    from clay_search.store import sync_index

    res = sync_index(store)
    return res.to_dict()
