"""The ingest run: sources in, chips read in worker threads, embedded in batches, written.

Reading and chipping (rasterio releases the GIL) run in a thread pool a few tasks ahead of the
inference loop, which batches chips of one sensor/band set/GSD and writes rows in commits of
``flush_rows``. Chip ids already in the store are skipped before anything is read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clay_search.errors import NoDataError
from clay_search.geo import footprints
from clay_search.ingest.chips import chip_id, window_json
from clay_search.ingest.manifest import RunManifest
from clay_search.ingest.params import THUMBNAIL_SIZE, IngestParams
from clay_search.ingest.plan import SourcePlan, decide_normaliser, plan_source
from clay_search.ingest.readers import ReaderPool
from clay_search.ingest.report import IngestReport, SourceReport
from clay_search.ingest.sources import Source, SourceFailure
from clay_search.ingest.thumbnails import thumbnails_png
from clay_search.ingest.writer import ChipWriter

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


def _read_task(plan: SourcePlan, index: int, items: list[tuple[str, object]],
               params: IngestParams, readers: ReaderPool) -> TaskResult:
    """Read, chip and describe a group of windows of one source (in a worker thread).

    The windows are read in strips (one file read per row of chips), and the footprints and
    thumbnails of the task's chips are made in one vectorised call each.
    """
    res = TaskResult(index)
    src, m = plan.source, plan.meta
    try:
        with readers.use(src) as reader:
            if plan.whole:
                reads = [reader.read(win, plan.bands.indices, params.chip_size)
                         for _, win in items]
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
        fps = footprints(m.crs, m.transform, [items[k][1] for k in keep],
                         size=(m.width, m.height), valid=[reads[k][1] for k in keep])
        log_scale = plan.normaliser is not None and plan.normaliser.transform == "db"
        thumbs: list[bytes] = [b""] * len(keep)
        by_shape: dict[tuple, list[int]] = {}
        for j, k in enumerate(keep):
            by_shape.setdefault(reads[k][0].shape, []).append(j)
        for js in by_shape.values():
            pngs = thumbnails_png([reads[keep[j]][0] for j in js],
                                  [reads[keep[j]][1] for j in js], plan.rgb,
                                  size=THUMBNAIL_SIZE, log=log_scale)
            for j, png in zip(js, pngs, strict=True):
                thumbs[j] = png
        crs = m.crs.to_string() if m.crs is not None else None
        common = {"datetime": plan.datetime, "sensor": plan.bands.sensor.name, "gsd": plan.gsd,
                  "source": src.display, "item_id": src.item_id, "crs": crs,
                  "label": src.label}
        for j, k in enumerate(keep):
            cid, win = items[k]
            raw, valid = reads[k]
            wkb, bounds, lonlat = fps[j]
            minx, miny, maxx, maxy = bounds if bounds else (None,) * 4
            row = {
                "chip_id": cid, "geometry": wkb, "minx": minx, "miny": miny, "maxx": maxx,
                "maxy": maxy, **common, "window": window_json(win), "thumbnail": thumbs[j],
            }
            res.chips.append(ChipRead(cid, raw, valid, row, lonlat))
    except Exception as e:  # noqa: BLE001 - reported against the source, others continue
        res.error = e
    return res


class _Batcher:
    """Collects chips of one (group, gsd) key and embeds them in batches."""

    def __init__(self, embedder, writer: ChipWriter, params: IngestParams) -> None:
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
        out = self.embedder.embed_raw(
            np.stack([c.raw for c in chips]),
            plan.bands.sensor,
            plan.bands.bands,
            normaliser=plan.normaliser,
            valid=np.stack([c.valid for c in chips])[:, None],
            gsd=plan.gsd,
            datetimes=[c.row["datetime"] for c in chips],
            lonlats=[c.lonlat for c in chips],
            patches=self.params.patch_embeddings,
        )
        self.embed_seconds += time.perf_counter() - t0
        self.embedded += len(chips)
        for i, c in enumerate(chips):
            row = dict(c.row)
            row["embedding"] = out.embedding[i]
            if out.patches is not None:
                row["patch_embeddings"] = out.patches[i]
            self.writer.add(row)


def _progress(enabled: bool):
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


def execute(
    sources: Iterable[Source | SourceFailure],
    store: str | Path,
    embedder,
    registry,
    params: IngestParams,
    *,
    progress: bool = False,
    on_flush: Callable[[int], None] | None = None,
) -> IngestReport:
    """Plan, read, embed and write; returns the report (the run manifest is written too)."""
    t_start = time.perf_counter()
    report = IngestReport(store=str(store), model_id=embedder.model_id)
    reports: list[SourceReport] = []
    plans: list[SourcePlan] = []
    seen: set[str] = set()
    rep_of: dict[int, SourceReport] = {}

    def fail(name: str, err: BaseException, rep: SourceReport | None = None) -> None:
        rep = rep or SourceReport(name)
        if rep not in reports:
            reports.append(rep)
        rep.status, rep.error = "failed", f"{type(err).__name__}: {err}"
        log.warning("skipping %s: %s", name, rep.error)
        if params.fail_fast:
            raise err

    patch_dim = None
    if params.patch_embeddings:
        patch_dim = (params.chip_size // embedder.patch_size) ** 2 * embedder.token_dim
    writer = ChipWriter(store, embedder.model_id, embedder.dim, patch_dim,
                        flush_rows=params.flush_rows, flush_seconds=params.flush_seconds)
    manifest = RunManifest(writer.info.runs_path, params, embedder.model_id)
    manifest.save(report, reports)
    workers = params.reader_threads(embedder.device)
    report.workers = workers
    readers = ReaderPool(max(2, 2 * workers + 2), nodata=params.nodata)
    try:
        # 1. plan every source (metadata only)
        for s in sources:
            if isinstance(s, SourceFailure):
                fail(s.source, s.error)
                continue
            if s.identity in seen:
                continue
            seen.add(s.identity)
            rep = SourceReport(s.display, kind=s.kind)
            try:
                plan = plan_source(s, registry, params)
            except Exception as e:  # noqa: BLE001 - reported, the others continue
                fail(s.display, e, rep)
                continue
            plans.append(plan)
            reports.append(rep)
            rep_of[id(plan)] = rep
        # 2. one normaliser per group
        groups: dict[tuple, list[SourcePlan]] = {}
        for p in plans:
            groups.setdefault(p.group_key, []).append(p)
        for key, members in groups.items():
            try:
                norm = decide_normaliser(members, params.stats, params.chip_size, readers)
            except Exception as e:  # noqa: BLE001
                for p in members:
                    fail(p.source.display, e, rep_of[id(p)])
                continue
            for p in members:
                p.normaliser = norm
            report.normalisers[" | ".join([key[0], key[1], ",".join(key[2])])] = {
                **norm.to_dict(), "notes": list(norm.notes),
            }
            for n in norm.notes:
                report.notes.append(f"{members[0].source.display}: {n}")
        plans = [p for p in plans if p.normaliser is not None]
        # 3. windows still to do
        todo: list[list[tuple[str, object]]] = []
        for p in plans:
            rep = rep_of[id(p)]
            rep.sensor, rep.bands = p.bands.sensor.name, p.bands.band_names
            rep.notes = p.notes
            items = []
            for w in p.windows:
                cid = chip_id(p.source.identity, w, chip_size=params.chip_size,
                              step=params.step, bands=p.bands.band_names, whole=p.whole)
                if cid in writer:
                    rep.existing += 1
                else:
                    items.append((cid, w))
            rep.planned = len(p.windows)
            todo.append(items)
        total = sum(len(t) for t in todo)
        report.sources = len(reports)
        _run_tasks(plans, todo, rep_of, writer, embedder, params, total, progress, fail,
                   report, readers, workers)
        readers.close()
        report.index = _sync_index(writer.info.path, report)
    finally:
        readers.close()
        report.seconds = time.perf_counter() - t_start
        report.chips_written = writer.written
        report.sources_detail = reports
        report.table_version = writer.version
        manifest.save(report, reports, finished=True)
        report.manifest = str(manifest.path)
        writer.close()
    return report


def _run_tasks(plans, todo, rep_of, writer, embedder, params, total, progress, fail, report,
               readers, workers):
    batcher = _Batcher(embedder, writer, params)
    tasks = []
    for i, (p, items) in enumerate(zip(plans, todo, strict=True)):
        c = len(p.bands.indices)
        per = max(1, min(max(params.batch_size, TASK_CHIPS),
                         TASK_BYTES // (4 * c * params.chip_size ** 2)))
        for k in range(0, len(items), per):
            tasks.append((i, items[k:k + per]))
    remaining = [0] * len(plans)
    for i, _ in tasks:
        remaining[i] += 1
    failed: set[int] = set()
    t0 = time.perf_counter()
    done = 0
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
    ahead = max(2, 2 * workers)
    queue: deque[Future | TaskResult] = deque()
    it = iter(tasks)

    def submit_next() -> bool:
        nxt = next(it, None)
        if nxt is None:
            return False
        i, items = nxt
        if pool is None:
            queue.append(_read_task(plans[i], i, items, params, readers))
        else:
            queue.append(pool.submit(_read_task, plans[i], i, items, params, readers))
        return True

    with _progress(progress) as bar:
        task_id = bar.add_task("ingest", total=total, rate="-")
        try:
            while len(queue) < ahead and submit_next():
                pass
            while queue:
                head = queue.popleft()
                res = head.result() if isinstance(head, Future) else head
                submit_next()
                plan = plans[res.index]
                rep = rep_of[id(plan)]
                remaining[res.index] -= 1
                if res.index in failed:
                    continue
                if res.error is not None:
                    failed.add(res.index)
                    batcher.flush()
                    writer.flush()
                    fail(plan.source.display, res.error, rep)
                    continue
                rep.nodata += res.nodata
                for chip in res.chips:
                    batcher.add(plan, chip)
                rep.written += len(res.chips)
                done += len(res.chips) + res.nodata
                rate = done / max(time.perf_counter() - t0, 1e-9)
                bar.update(task_id, advance=len(res.chips) + res.nodata, rate=f"{rate:.1f}")
                if remaining[res.index] == 0 and rep.nodata == rep.planned:
                    fail(plan.source.display, NoDataError(
                        f"every chip of {plan.source.display} is more than "
                        f"{params.max_nodata:.0%} nodata; nothing to ingest (check the nodata "
                        "value, or raise --max-nodata)"), rep)
            batcher.flush()
            writer.flush()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    report.embed_seconds = batcher.embed_seconds
    report.chips_nodata = sum(rep_of[id(p)].nodata for p in plans)
    report.chips_existing = sum(rep_of[id(p)].existing for p in plans)


def _sync_index(store: Path, report: IngestReport) -> dict | None:
    """Bring the FAISS index up to the table version (see clay_search.index)."""
    from clay_search.store import sync_index

    res = sync_index(store)
    return res.to_dict()
