"""``engine="ray"``: step 4 of the ingest run (read -> embed -> write) as a Ray Data pipeline.

Steps 1-3 (plan the sources, choose normalisers, list the windows not in the store yet) run on
the driver exactly as in the local engine (:mod:`clay_search.ingest.pipeline`). Then:

- read/decode: one Ray task per read task of the local engine (:func:`pipeline._tasks`, the same
  groups of windows), running the local engine's ``_read_task`` (read, chip, footprints,
  thumbnails) with its own reader pool;
- embed: an actor pool (``ActorPoolStrategy``) holding the model, GPU actors with
  ``num_gpus``; each actor runs the local engine's ``_Batcher`` (the same batching by sensor,
  band set, GSD and shape, and ``embed_chips``);
- write: the driver takes the embedded rows as they come and gives them to the one
  :class:`~clay_search.ingest.writer.ChipWriter`, which commits every ``flush_rows`` rows.

Why the driver writes (and not Ray Data's Lance datasink, ``lance-ray`` or ``lancedb-ray``):
those write fragments from the tasks and commit once at the end, so a run killed before its
end leaves nothing (everything embedded is lost) and a retried task can write its fragment
twice unless the sink deduplicates; they also need ``pylance``/``lance-ray`` beside LanceDB.
Writing from the driver keeps the local engine's guarantees unchanged: every commit is atomic
(one ``table.add``), a killed driver loses at most ``flush_rows`` rows and the next run skips the
ids already written, a killed worker's task is retried by Ray and its rows are deduplicated by
chip id before they are written (``ChipWriter`` drops ids it has seen). The rows are small
(embedding + thumbnail, ~10 KB per chip) next to the pixels read and the model's work, which stay
on the workers; past ~10^4 chips/s one driver would become the limit, and fragments written by
tasks and committed per batch of tasks (Lance's ``LanceOperation.Append``) would be the next
step. The index is synced once at the end by the caller, as in the local engine.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from typing import TYPE_CHECKING, Any

from clay_search.errors import IngestOptionError

if TYPE_CHECKING:
    from clay_search.ingest.params import IngestParams
    from clay_search.ingest.pipeline import RunState, SourceWork
    from clay_search.ingest.writer import ChipWriter
    from clay_search.model.embedder import Embedder

log = logging.getLogger("clay_search.ingest")


def _import_ray():  # -> the ray module
    try:
        import ray
    except ImportError:
        raise IngestOptionError(
            "--engine ray needs Ray: pip install 'clay-search[distributed]'"
        ) from None
    return ray


def _read(row: dict[str, Any], *, nodata: float | None) -> dict[str, Any]:
    """Ray task: read one group of windows (the local engine's ``_read_task``)."""
    from clay_search.ingest.pipeline import _read_task
    from clay_search.ingest.readers import ReaderPool

    plan, index, items, params = pickle.loads(row["spec"])
    readers = ReaderPool(2, nodata=nodata)
    try:
        res = _read_task(plan, index, items, params, readers)
    finally:
        readers.close()
    return {"task": row["task"], "result": pickle.dumps(res)}


class _Rows:
    """Collects the rows ``_Batcher`` would give the writer (on an actor)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)


class EmbedActor:
    """Ray actor holding the model: embeds the chips of read tasks with the local ``_Batcher``."""

    def __init__(
        self, embedder_blob: bytes, params_blob: bytes, plans_blob: bytes, device: str | None
    ) -> None:
        import torch

        torch.set_num_threads(1)  # one core per actor: Ray schedules actors by CPU
        self.embedder = pickle.loads(embedder_blob)
        self.params = pickle.loads(params_blob)
        self.plans = pickle.loads(plans_blob)
        if device is not None and device != str(self.embedder.device):
            from clay_search.model.embedder import Embedder

            self.embedder = Embedder.from_weights(
                self.params.weights, precision=self.params.precision, device=device
            )

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from clay_search.ingest.pipeline import _Batcher

        out: dict[str, list] = {"task": [], "rows": [], "nodata": [], "error": []}
        for task, blob in zip(batch["task"], batch["result"], strict=True):
            res = pickle.loads(blob)
            rows = _Rows()
            err = res.error
            if err is None and res.chips:
                batcher = _Batcher(self.embedder, rows, self.params)  # type: ignore[arg-type]
                try:
                    for chip in res.chips:
                        batcher.add(self.plans[res.index], chip)
                    batcher.flush()
                except Exception as e:  # noqa: BLE001 - fails the source, as locally
                    err, rows.rows = e, []
            out["task"].append(int(task))
            out["rows"].append(pickle.dumps(rows.rows))
            out["nodata"].append(int(res.nodata))
            out["error"].append(pickle.dumps(err))
        return out


def read_embed_write(
    work: list[SourceWork],
    writer: ChipWriter,
    embedder: Embedder,
    params: IngestParams,
    state: RunState,
    *,
    total: int,
) -> None:
    """Step 4 on Ray: read tasks, an embedding actor pool, rows written by the driver.

    Connects to ``params.ray_address`` (``"auto"``: a running cluster; None: a local one
    started here and shut down at the end) unless Ray is already initialised.
    """
    from clay_search.ingest.pipeline import _progress, _tasks

    tasks = _tasks(work, params)
    state.report.chips_existing = sum(w.report.existing for w in work)
    if not tasks:  # everything is in the store already: no cluster needed
        return
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(
            address=params.ray_address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        started = True
    try:
        _run(
            ray, work, writer, embedder, params, state, total=total, progress=_progress, tasks=tasks
        )
    finally:
        if started:
            ray.shutdown()


def _run(ray, work, writer, embedder, params, state, *, total, progress, tasks) -> None:
    import ray.data

    plans = [dataclasses.replace(w.plan, windows=[]) for w in work]  # the windows go per task
    index = {id(w): i for i, w in enumerate(work)}
    slim = dataclasses.replace(params, extra={})
    specs = [
        {"task": k, "spec": pickle.dumps((plans[index[id(w)]], index[id(w)], items, slim))}
        for k, (w, items) in enumerate(tasks)
    ]
    owner = [w for w, _ in tasks]
    gpus = float(params.num_gpus or 0)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, int(gpus)) if gpus else max(1, min(cpus // 2, len(specs)))
    device = "cuda" if gpus else None
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ds = ray.data.from_items(specs, override_num_blocks=min(len(specs), 64))
    # Only Ray's named remote parameters (``ray_remote_args`` is deprecated, removed in Ray
    # 2.64). Fault tolerance is Ray Data's default: a read task whose worker died runs again
    # (``max_retries=-1``), a dead embedding actor is restarted and its task retried
    # (``max_restarts=-1``, ``max_task_retries=-1``); exceptions raised by our code are not
    # retried (``DataContext.retried_map_errors`` is off): ``_read`` and ``EmbedActor`` return
    # them as the task's ``error``, which fails that source as the local engine does.
    ds = ds.map(_read, fn_kwargs={"nodata": params.nodata}, num_cpus=1)
    ds = ds.map_batches(
        EmbedActor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_args=(
            pickle.dumps(embedder),
            pickle.dumps(slim),
            pickle.dumps(plans),
            device,
        ),
        num_gpus=gpus / actors if gpus else 0,
        num_cpus=0 if gpus else 1,
    )
    seen: set[int] = set()
    t0, done = time.perf_counter(), 0
    with progress(params.progress) as bar:
        task_id = bar.add_task("ingest", total=total, rate="-")
        for out in ds.iter_rows():
            k = int(out["task"])
            if k in seen:  # a retried task delivered twice: its rows are written once
                continue
            seen.add(k)
            w = owner[k]
            w.tasks_left -= 1
            if w.failed:
                continue
            err = pickle.loads(out["error"])
            if err is not None:
                w.failed = True
                writer.flush()
                state.fail(w.plan.source.display, err, w.report)
                continue
            rows = pickle.loads(out["rows"])
            for row in rows:
                writer.add(row)
            w.report.nodata += int(out["nodata"])
            w.report.written += len(rows)
            done += len(rows) + int(out["nodata"])
            bar.update(
                task_id,
                advance=len(rows) + int(out["nodata"]),
                rate=f"{done / max(time.perf_counter() - t0, 1e-9):.1f}",
            )
            state.fail_if_all_nodata(w)
    writer.flush()
    state.report.chips_nodata = sum(w.report.nodata for w in work)
