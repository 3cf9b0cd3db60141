"""Stores on object storage: a real S3-compatible server (moto's server mode) on loopback.

The tests start ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a real HTTP S3 API, not a
mocked client), point the AWS settings of the environment at it, and ingest, search, resume and
write concurrently into ``s3://BUCKET/PREFIX`` stores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from gated_embedder import SCRIPT, table_rows, wait_for

moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed")

from clay_search.errors import StoreMismatchError  # noqa: E402
from clay_search.ingest import run  # noqa: E402
from clay_search.location import RemotePath, store_location  # noqa: E402
from clay_search.store import check_index, connect, read_store_info  # noqa: E402

BUCKET = "clay-test"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback with one bucket; the environment points at it."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*AWS_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        import pyarrow.fs as pfs

        pfs.S3FileSystem(
            endpoint_override=f"{host}:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        ).create_dir(BUCKET)
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_store(s3_endpoint) -> str:
    """A fresh store URI in the bucket."""
    return f"s3://{BUCKET}/stores/{uuid.uuid4().hex[:8]}"


def test_location_parsing():
    loc = store_location("s3:/bucket/a/b")  # what a CLI option typed as Path makes of s3://
    assert isinstance(loc, RemotePath) and str(loc) == "s3://bucket/a/b"
    assert str(loc / "store.json") == "s3://bucket/a/b/store.json"
    assert str(store_location("gcs://b/p")) == "gs://b/p"
    assert not isinstance(store_location("file:///tmp/x"), RemotePath)


def test_ingest_search_with_index(s3_store, sample_dir, nano_embedder, tmp_path):
    """Everything lives in the bucket, and search there uses the FAISS index, not exact search;
    the answers equal those of the same ingest into a local folder."""
    report = run([sample_dir], s3_store, embedder=nano_embedder, workers=1)
    assert report.ok and report.chips_written > 0
    assert report.index["count"] == report.chips_written
    root = store_location(s3_store)
    names = {p.name for p in (root / "index").iterdir()}
    assert "index.json" in names and any(n.endswith(".faiss") for n in names), names
    assert next(p.name for p in (root / "runs").iterdir()).endswith(".json")
    assert str(report.manifest).startswith("s3://")
    manifest = json.loads(RemotePath(report.manifest).read_text())
    assert manifest["status"] == "done"
    assert read_store_info(s3_store).model_id == nano_embedder.model_id

    store = connect(s3_store)
    assert len(store) == report.chips_written and store.version == store.latest_version
    ids = store.attrs.column("chip_id").to_pylist()
    res = store.search(ids[0], k=10)
    assert res.meta["index"] in ("flat", "ivf", "hnsw"), res.meta
    assert "index_note" not in res.meta or not res.meta["index_note"]
    assert store.overview()["index"]["count"] == len(store)
    assert check_index(s3_store).ok

    local = tmp_path / "local"
    run([sample_dir], local, embedder=nano_embedder, workers=1)
    lres = connect(local).search(ids[0], k=10)
    assert res.to_arrow().column("chip_id").to_pylist() == (
        lres.to_arrow().column("chip_id").to_pylist()
    )
    np.testing.assert_allclose(
        res.to_arrow().column("score").to_numpy(),
        lres.to_arrow().column("score").to_numpy(),
        atol=1e-5,
    )
    # filters work on the object store too
    bbox = store.overview()["bbox"]
    assert store.count(bbox=bbox)["matched"] == len(store)


def test_rerun_and_model_mismatch(s3_store, sample_dir, nano_embedder):
    src = sample_dir / "naip"
    first = run([src], s3_store, embedder=nano_embedder)
    again = run([src], s3_store, embedder=nano_embedder)
    assert again.chips_written == 0 and table_rows(s3_store) == first.chips_written
    assert again.index["action"] == "unchanged"
    from clay_search.store import open_or_create_store

    with pytest.raises(StoreMismatchError):
        open_or_create_store(s3_store, "other-model", nano_embedder.dim)


S3_KW = dict(chip_size=64, stride=16, batch_size=4, flush_rows=12, workers=1)
TESTS = Path(__file__).parent


def _ingest(src, store: str, weights, gate, free_chips: int) -> list[str]:
    """The command of an fp32 ingest whose embedder waits at ``gate`` after ``free_chips``."""
    args = (TESTS, src, store, weights, gate, free_chips)
    return [sys.executable, "-c", SCRIPT.format(kw=repr(S3_KW)), *map(str, args)]


@pytest.mark.slow
def test_resume_after_kill(s3_store, sample_dir, nano_weights, tmp_path):
    """A run killed (SIGKILL) after its first commits and run again ends with every chip once,
    the same table as one uninterrupted run."""
    src, gate = sample_dir / "naip", tmp_path / "gate"  # the gate is never opened
    waiting = gate.with_name(gate.name + ".waiting")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _ingest(src, s3_store, nano_weights, gate, 24),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for(
        lambda: waiting.exists() and table_rows(s3_store) >= 12, "the first commits", proc=proc
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = table_rows(s3_store)
    assert 12 <= partial < 338
    subprocess.run(
        _ingest(src, s3_store, nano_weights, gate, 10**9), env=env, check=True, capture_output=True
    )
    store = connect(s3_store)
    ids = store.attrs.column("chip_id").to_pylist()
    assert len(ids) == 338 and len(set(ids)) == 338  # 13 x 13 chips x 2 crops, none twice
    assert store.search(ids[0], k=5).meta["index"] != "exact"


def test_two_writers(s3_store, sample_dir, nano_embedder):
    """Two ingests into one object-store store at once: LanceDB's commit protocol keeps both
    writers' commits; the index and store.json stay whole; a final run adds nothing."""
    sources = [sample_dir / "naip", sample_dir / "eurosat_ms"]
    reports, errors = [None, None], []

    def work(i: int) -> None:
        try:
            reports[i] = run(
                [sources[i]], s3_store, embedder=nano_embedder, workers=1, flush_rows=8
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
    assert table_rows(s3_store) == written
    # one more sync brings the index to the latest version whichever writer synced last
    store = connect(s3_store)
    store.sync()
    store = connect(s3_store)
    ids = store.attrs.column("chip_id").to_pylist()
    assert len(ids) == len(set(ids)) == written
    assert store.search(ids[-1], k=5).meta["index"] != "exact"
    again = run(sources, s3_store, embedder=nano_embedder, workers=1)
    assert again.chips_written == 0


def test_cli_on_object_store(s3_store, sample_dir, nano_weights, tmp_path):
    """`clay-search ingest --store s3://...` then `search` and `index --check` there."""
    from typer.testing import CliRunner

    from clay_search.cli.main import app

    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "ingest",
            str(sample_dir / "naip"),
            "--store",
            s3_store,
            "--weights",
            str(nano_weights),
            "--precision",
            "fp32",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    ids = connect(s3_store).attrs.column("chip_id").to_pylist()
    out = tmp_path / "r.geojson"
    r = runner.invoke(
        app, ["search", "--store", s3_store, "--positive", ids[0], "-k", "5", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    features = json.loads(out.read_text())["features"]
    assert len(features) == 5 and ids[0] not in {f["properties"]["chip_id"] for f in features}
    r = runner.invoke(app, ["index", "--check", "--store", s3_store])
    assert r.exit_code == 0, r.output
