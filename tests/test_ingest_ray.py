"""``engine="ray"``: a local Ray cluster (2 CPUs, started and stopped here) on the shipped sample.

The distributed engine must write the same table as the local one (same chip ids, columns and
values; embeddings within fp32 tolerance), and a worker killed mid-run must change nothing in
the result (Ray restarts the embedding actor and retries its task; no chip lost or doubled).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gated_embedder import GatedEmbedder, table_rows
from test_ingest_helpers import embeddings, read_chips, thumbnail_pixels

ray = pytest.importorskip("ray", reason="the distributed extra (ray) is not installed")
psutil = pytest.importorskip("psutil")

from clay_search.ingest import run  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # a deprecated Ray call made by our engine fails the test (Ray attributes the warning to
    # the caller's module, so Ray's own internal warnings are not turned into errors)
    pytest.mark.filterwarnings("error::ray.util.annotations.RayDeprecationWarning:clay_search"),
]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module, shut down afterwards."""
    here = str(Path(__file__).parent)  # the workers import gated_embedder from here
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def _same_table(a, b) -> None:
    a = a.sort_values("chip_id").reset_index(drop=True)
    b = b.sort_values("chip_id").reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    assert a["chip_id"].tolist() == b["chip_id"].tolist()
    for col in a.columns:
        if col in ("embedding", "patch_embeddings", "thumbnail"):
            continue
        assert a[col].equals(b[col]), col
    pa, pb = thumbnail_pixels(a), thumbnail_pixels(b)  # the pictures, not their deflate streams
    differ = np.flatnonzero((pa != pb).any(axis=(1, 2, 3)))
    assert differ.size == 0, (
        f"{differ.size} thumbnails differ, e.g. {a['chip_id'][differ[0]]} "
        f"(max difference {int(np.abs(pa.astype(int) - pb.astype(int)).max())})"
    )
    np.testing.assert_allclose(embeddings(a), embeddings(b), rtol=0, atol=1e-5)


def test_ray_engine_matches_local(ray_cluster, sample_dir, nano_embedder, tmp_path):
    local = run([sample_dir], tmp_path / "local", embedder=nano_embedder, workers=1)
    dist = run([sample_dir], tmp_path / "ray", embedder=nano_embedder, engine="ray")
    assert dist.ok, [s.error for s in dist.failed]
    assert dist.chips_written == local.chips_written > 0
    assert dist.index["count"] == dist.chips_written  # synced once, at the end
    _same_table(read_chips(tmp_path / "ray"), read_chips(tmp_path / "local"))
    again = run([sample_dir], tmp_path / "ray", embedder=nano_embedder, engine="ray")
    assert again.chips_written == 0 and again.chips_existing == dist.chips_written


def _embed_workers() -> list:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "EmbedActor" in cmd and p.info["pid"] != os.getpid():
            out.append(p.info["pid"])
    return out


def test_killed_worker_changes_nothing(ray_cluster, sample_dir, nano_embedder, tmp_path):
    """SIGKILL the embedding actor's worker process in the middle of a run.

    The actor's embedder stops after the first file's chips (a read task or more) until the
    test has killed it, so the kill lands mid-run on any machine (CI's machine once finished
    the whole run between two polls); the restarted actor finds the gate open.
    """
    src = sample_dir / "naip"
    kw = dict(chip_size=64, stride=32, batch_size=4, flush_rows=8)  # 7 x 7 x 2 = 98 chips
    local = run([src], tmp_path / "local", embedder=nano_embedder, workers=1, **kw)
    gate = tmp_path / "gate"
    first_file = min(s.written for s in local.sources_detail)  # one read task's chips, or more
    gated = GatedEmbedder.wrap(nano_embedder, gate, free_chips=first_file)
    result: dict = {}

    def work() -> None:
        try:
            result["report"] = run([src], tmp_path / "ray", embedder=gated, engine="ray", **kw)
        except Exception as e:  # noqa: BLE001 - checked below
            result["error"] = e

    t = threading.Thread(target=work)
    t.start()
    killed = None
    t0 = time.monotonic()
    while t.is_alive() and time.monotonic() - t0 < 300 and killed is None:
        pids = _embed_workers()
        if pids and gated.waiting.exists():  # the actor has embedded a task's chips: mid-run
            written = table_rows(tmp_path / "ray")
            os.kill(pids[0], signal.SIGKILL)
            killed, at_kill = pids[0], written
            gate.touch()  # let the restarted actor (and any other) go on
        time.sleep(0.1)
    gate.touch()
    t.join(timeout=600)
    assert killed is not None, "no embedding actor process was seen to kill"
    assert at_kill < local.chips_written  # the run was not over
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert report.ok, [s.error for s in report.failed]
    _same_table(read_chips(tmp_path / "ray"), read_chips(tmp_path / "local"))
    assert report.chips_written == local.chips_written
