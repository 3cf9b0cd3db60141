"""Resume after SIGKILL: a killed and re-run ingest ends with exactly the uninterrupted table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import lancedb
import numpy as np
import pytest
from test_ingest_helpers import (
    embeddings,
    read_chips,
)

from clay_search.ingest import run

# 2 NAIP crops of 256 px, 64 px chips every 16 px: 13 x 13 x 2 = 338 chips, + 30 EuroSAT chips
KW = dict(chip_size=64, stride=16, batch_size=4, flush_rows=12, workers=1, precision="fp32")
SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from clay_search.ingest import run
run([sys.argv[1]], sys.argv[2], weights=sys.argv[3], **{kw})
"""


def _rows(store) -> int:
    try:
        return lancedb.connect(str(store / "lancedb")).open_table("chips").count_rows()
    except Exception:  # noqa: BLE001 - the table may not exist yet
        return 0


def _start(sample_dir, store, weights) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            SCRIPT.format(kw=repr(KW)),
            str(sample_dir),
            str(store),
            str(weights),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_after(proc: subprocess.Popen, store, min_rows: int, timeout: float = 120) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"ingest ended before it could be killed: {proc.stderr.read()[-2000:]}")
        if _rows(store) >= min_rows:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return _rows(store)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(sample_dir, nano_weights, tmp_path):
    from clay_search.model import Embedder

    total = 338 + 30
    killed_store = tmp_path / "killed"
    seen = []
    for min_rows in (12, 120):  # two kills at different points of the run
        proc = _start(sample_dir, killed_store, nano_weights)
        seen.append(_kill_after(proc, killed_store, min_rows))
    assert 0 < seen[0] <= seen[1] < total, seen
    df_partial = read_chips(killed_store)
    assert df_partial["chip_id"].is_unique

    proc = _start(sample_dir, killed_store, nano_weights)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]

    embedder = Embedder.from_weights(nano_weights, precision="fp32")
    clean_store = tmp_path / "clean"
    kw = {k: v for k, v in KW.items() if k != "precision"}
    report = run([sample_dir], clean_store, embedder=embedder, **kw)
    assert report.ok and report.chips_written == total

    resumed, clean = read_chips(killed_store), read_chips(clean_store)
    assert len(resumed) == total and resumed["chip_id"].is_unique
    assert resumed["chip_id"].tolist() == clean["chip_id"].tolist()
    np.testing.assert_allclose(embeddings(resumed), embeddings(clean), rtol=1e-4, atol=1e-5)
    for col in ("minx", "miny", "label", "window", "datetime", "source"):
        assert resumed[col].equals(clean[col]), col
