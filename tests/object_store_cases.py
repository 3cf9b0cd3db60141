"""The object-store tests every server runs (moto's S3, Azurite's blob storage), written once.

A server's test module subclasses :class:`ObjectStoreCases` (a ``Test...`` class, so pytest
collects it there; this module's name keeps it from being collected twice) and provides the
fixture ``object_store``: a fresh store URI on its server, with the environment pointing at the
server (:func:`server_environment`). The cases ingest, search with the FAISS index, rerun,
resume after a SIGKILL and write with two racing creators of a new store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from gated_embedder import SCRIPT, table_rows, wait_for

from clay_search.errors import StoreMismatchError
from clay_search.ingest import run
from clay_search.location import RemotePath, store_location
from clay_search.store import check_index, connect, open_or_create_store, read_store_info

#: the keywords of the gated ingests of the kill test (small chips: 338 of them from naip)
KILL_KW = dict(chip_size=64, stride=16, batch_size=4, flush_rows=12, workers=1)
TESTS = Path(__file__).parent


@contextmanager
def server_environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (where the stores and the subprocesses find the server)
    and put back what was there before on leaving."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, value)
        yield


@contextmanager
def running_server(cmd: list[str]) -> Iterator[subprocess.Popen]:
    """A server process started from ``cmd`` (stderr kept for the failure message), stopped on
    leaving: SIGTERM, then a kill if it has not exited after 20 s."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gated_ingest(src, store: str, weights, gate, free_chips: int) -> list[str]:
    """The command of an fp32 ingest whose embedder waits at ``gate`` after ``free_chips``."""
    args = (TESTS, src, store, weights, gate, free_chips)
    return [sys.executable, "-c", SCRIPT.format(kw=repr(KILL_KW)), *map(str, args)]


def assert_overwrites_read_whole(path: RemotePath) -> None:
    """Overwrite ``path`` 19 times with :func:`~clay_search.location.write_atomic` in one thread
    while another reads it: every read must be a whole content, the old or the new (never an
    empty or a partial object)."""
    from clay_search.location import write_atomic

    contents = [f'{{"n": {i}, "pad": "{"x" * (2000 + 37 * i)}"}}'.encode() for i in range(20)]
    write_atomic(path, contents[0])
    done = threading.Event()

    def writer() -> None:
        for c in contents[1:]:
            write_atomic(path, c)
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    reads = []
    while not done.is_set():
        reads.append(path.read_bytes())
    t.join()
    reads.append(path.read_bytes())
    assert len(reads) >= 2
    bad = [r[:40] for r in reads if r not in contents]
    assert not bad, f"{len(bad)} of {len(reads)} reads were neither the old nor the new content"


class ObjectStoreCases:
    """Ingest, search, resume and concurrent writes on one object-store server.

    Subclasses set :attr:`scheme` (the URI scheme of the stores) and their module provides the
    ``object_store`` fixture."""

    scheme: str

    def test_ingest_search_with_index(self, object_store, sample_dir, nano_embedder, tmp_path):
        """Table, store.json, manifests and the FAISS index all live in the bucket; search there
        uses the index, not exact search, and answers as the same ingest into a local folder."""
        report = run([sample_dir], object_store, embedder=nano_embedder, workers=1)
        assert report.ok and report.chips_written > 0
        assert report.index["count"] == report.chips_written
        root = store_location(object_store)
        names = {p.name for p in (root / "index").iterdir()}
        assert "index.json" in names and any(n.endswith(".faiss") for n in names), names
        assert next(p.name for p in (root / "runs").iterdir()).endswith(".json")
        assert str(report.manifest).startswith(f"{self.scheme}://")
        manifest = json.loads(RemotePath(report.manifest).read_text())
        assert manifest["status"] == "done"
        assert read_store_info(object_store).model_id == nano_embedder.model_id

        store = connect(object_store)
        assert len(store) == report.chips_written and store.version == store.latest_version
        ids = store.attrs.column("chip_id").to_pylist()
        res = store.search(ids[0], k=10)
        assert res.meta["index"] in ("flat", "ivf", "hnsw"), res.meta
        assert "index_note" not in res.meta or not res.meta["index_note"]
        assert store.overview()["index"]["count"] == len(store)
        assert check_index(object_store).ok

        local = tmp_path / "local"
        run([sample_dir], local, embedder=nano_embedder, workers=1)
        lres = connect(local).search(ids[0], k=10)
        assert res.chip_ids == lres.chip_ids
        assert res.to_arrow().column("chip_id").to_pylist() == (
            lres.to_arrow().column("chip_id").to_pylist()
        )
        np.testing.assert_allclose(
            res.to_arrow().column("score").to_numpy(),
            lres.to_arrow().column("score").to_numpy(),
            atol=1e-5,
        )
        # filters work on the object store too
        assert store.count(bbox=store.overview()["bbox"])["matched"] == len(store)

    def test_rerun_and_model_mismatch(self, object_store, sample_dir, nano_embedder):
        """A second run of the same source adds nothing; another model is refused."""
        src = sample_dir / "naip"
        first = run([src], object_store, embedder=nano_embedder)
        again = run([src], object_store, embedder=nano_embedder)
        assert again.chips_written == 0 and table_rows(object_store) == first.chips_written
        assert again.index["action"] == "unchanged"
        with pytest.raises(StoreMismatchError):
            open_or_create_store(object_store, "other-model", nano_embedder.dim)

    @pytest.mark.slow
    def test_resume_after_kill(self, object_store, sample_dir, nano_weights, tmp_path):
        """A run killed (SIGKILL) at a gate after its first commits and run again ends with every
        chip once, the same table as one uninterrupted run."""
        src, gate = sample_dir / "naip", tmp_path / "gate"  # the gate is never opened
        waiting = gate.with_name(gate.name + ".waiting")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            gated_ingest(src, object_store, nano_weights, gate, 24),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(
            lambda: waiting.exists() and table_rows(object_store) >= 12,
            "the first commits",
            proc=proc,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        partial = table_rows(object_store)
        assert 12 <= partial < 338
        subprocess.run(
            gated_ingest(src, object_store, nano_weights, gate, 10**9),
            env=env,
            check=True,
            capture_output=True,
        )
        store = connect(object_store)
        ids = store.attrs.column("chip_id").to_pylist()
        assert len(ids) == 338 and len(set(ids)) == 338  # 13 x 13 chips x 2 crops, none twice
        assert store.search(ids[0], k=5).meta["index"] != "exact"

    def test_two_writers(self, object_store, sample_dir, nano_embedder):
        """Two ingests into one new object-store store at once (both create it: store.json and
        the table race): LanceDB's commit protocol keeps both writers' commits; the index and
        store.json stay whole; a final run adds nothing."""
        sources = [sample_dir / "naip", sample_dir / "eurosat_ms"]
        reports, errors = [None, None], []

        def work(i: int) -> None:
            try:
                reports[i] = run(
                    [sources[i]], object_store, embedder=nano_embedder, workers=1, flush_rows=8
                )
            except Exception as e:  # noqa: BLE001 - reported by the assert below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        written = sum(r.chips_written for r in reports)
        assert table_rows(object_store) == written
        # one more sync brings the index to the latest version whichever writer synced last
        store = connect(object_store)
        store.sync()
        store = connect(object_store)
        ids = store.attrs.column("chip_id").to_pylist()
        assert len(ids) == len(set(ids)) == written
        assert store.search(ids[-1], k=5).meta["index"] != "exact"
        again = run(sources, object_store, embedder=nano_embedder, workers=1)
        assert again.chips_written == 0

    def test_cli_on_object_store(self, object_store, sample_dir, nano_weights, tmp_path):
        """`clay-search ingest --store URI` then `search` and `index --check` there."""
        from typer.testing import CliRunner

        from clay_search.cli.main import app

        runner = CliRunner()
        r = runner.invoke(
            app,
            [
                "ingest",
                str(sample_dir / "naip"),
                "--store",
                object_store,
                "--weights",
                str(nano_weights),
                "--precision",
                "fp32",
                "-q",
            ],
        )
        assert r.exit_code == 0, r.output
        ids = connect(object_store).attrs.column("chip_id").to_pylist()
        out = tmp_path / "r.geojson"
        r = runner.invoke(
            app,
            ["search", "--store", object_store, "--positive", ids[0], "-k", "5", "--out", str(out)],
        )
        assert r.exit_code == 0, r.output
        features = json.loads(out.read_text())["features"]
        assert len(features) == 5 and ids[0] not in {f["properties"]["chip_id"] for f in features}
        r = runner.invoke(app, ["index", "--check", "--store", object_store])
        assert r.exit_code == 0, r.output
