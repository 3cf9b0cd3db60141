"""Resume after SIGKILL: a killed and re-run ingest ends with exactly the uninterrupted table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gated_embedder import SCRIPT, table_rows, wait_for
from test_ingest_helpers import (
    embeddings,
    read_chips,
)

from clay_search.ingest import run

# 2 NAIP crops of 256 px, 64 px chips every 16 px: 13 x 13 x 2 = 338 chips, + 30 EuroSAT chips
KW = dict(chip_size=64, stride=16, batch_size=4, flush_rows=12, workers=1)
TESTS = Path(__file__).parent


def _start(sample_dir, store, weights, gate, free_chips: int) -> subprocess.Popen:
    """An fp32 ingest whose embedder waits at ``gate`` after ``free_chips`` chips."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = (TESTS, sample_dir, store, weights, gate, free_chips)
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(kw=repr(KW)), *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_mid_run(proc: subprocess.Popen, store, gate, min_rows: int) -> int:
    """SIGKILL ``proc`` once it waits at its gate with ``min_rows`` rows committed."""
    waiting = gate.with_name(gate.name + ".waiting")
    wait_for(
        lambda: waiting.exists() and table_rows(store) >= min_rows,
        f"{min_rows} rows written before the gate",
        proc=proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    waiting.unlink()
    return table_rows(store)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(sample_dir, nano_weights, tmp_path):
    from clay_search.model import Embedder

    total = 338 + 30
    killed_store = tmp_path / "killed"
    seen = []
    gate = tmp_path / "gate"  # never opened: the killed runs wait there until killed
    for min_rows in (12, 120):  # two kills at different points of the run
        proc = _start(sample_dir, killed_store, nano_weights, gate, min_rows + 12)
        seen.append(_kill_mid_run(proc, killed_store, gate, min_rows))
    assert 0 < seen[0] <= seen[1] < total, seen
    df_partial = read_chips(killed_store)
    assert df_partial["chip_id"].is_unique

    proc = _start(sample_dir, killed_store, nano_weights, gate, 10**9)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]

    embedder = Embedder.from_weights(nano_weights, precision="fp32")
    clean_store = tmp_path / "clean"
    report = run([sample_dir], clean_store, embedder=embedder, **KW)
    assert report.ok and report.chips_written == total

    resumed, clean = read_chips(killed_store), read_chips(clean_store)
    assert len(resumed) == total and resumed["chip_id"].is_unique
    assert resumed["chip_id"].tolist() == clean["chip_id"].tolist()
    np.testing.assert_allclose(embeddings(resumed), embeddings(clean), rtol=1e-4, atol=1e-5)
    for col in ("minx", "miny", "label", "window", "datetime", "source"):
        assert resumed[col].equals(clean[col]), col
