"""bench/million.py: the data it generates, its exact truth, and a whole --quick run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "million.py"


@pytest.fixture(scope="module")
def million():
    spec = importlib.util.spec_from_file_location("bench_million", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vectors_are_seeded_unit_and_clustered(million):
    mix = million.mixture(32, 8, seed=3)
    a = million.draw(mix, 500, np.random.default_rng([3, 1, 0]))
    b = million.draw(mix, 500, np.random.default_rng([3, 1, 0]))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # each vector is nearer its best centre than random unit vectors are to any centre
    best = (a @ mix["centres"].T).max(axis=1)
    noise = np.random.default_rng(9).standard_normal((500, 32)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert np.median(best) > np.median((noise @ mix["centres"].T).max(axis=1)) + 0.2


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_blocked_topk_is_exact(million, block):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    q = rng.standard_normal((5, 16)).astype(np.float32)
    want = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(million.blocked_topk(x, q, 10, block), want)


def test_filter_matches_footprint_intersection(million):
    a = {"lon": np.array([0.0, 0.995, 2.0]), "lat": np.zeros(3), "days": np.array([0, 0, 0])}
    f = {"bbox": [1.0, -1.0, 3.0, 1.0], "start": "2017-01-01", "end": "2017-12-31"}
    # row 1's footprint (0.995-1.001) reaches into the box; row 0's does not
    assert million.in_filter(a, f).tolist() == [False, True, True]
    f["start"] = "2017-01-02"
    assert not million.in_filter(a, f).any()


@pytest.mark.slow
def test_quick_run_every_row(tmp_path):
    out = tmp_path / "million.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path / "w"), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert set(rows) == {"exact", "faiss_ivfpq", "faiss_hnsw", "lancedb", "ours"}
    for name, row in rows.items():
        assert row["finished"], (name, row)
        assert row["cold"]["finished"] and row["cold"]["first_query_s"] >= 0, name
        assert row["peak_rss_bytes"] > 0
    assert rows["exact"]["recall"] == 1.0
    assert rows["exact"]["bytes_per_vector_disk"] == 4 * res["config"]["dim"]
    # 4,096 rows: our auto index is flat, so exact, filtered or not
    assert rows["ours"]["recall"] == 1.0
    assert rows["ours"]["filtered_recall"] == 1.0
    assert rows["ours"]["filtered_outside"] == 0
    for s in rows["lancedb"]["sweep"]:
        assert s["filtered_outside"] == 0
        assert 0.0 < s["recall"] <= 1.0
    sweep = rows["faiss_ivfpq"]["sweep"]
    for nprobe in res["config"]["nprobes"]:
        plain = next(s for s in sweep if s["nprobe"] == nprobe and "rerank" not in s)
        deep = next(s for s in sweep if s["nprobe"] == nprobe and s.get("rerank") == "10k")
        assert deep["recall"] > plain["recall"]  # PQ codes alone lose neighbours; fp32 re-rank
    assert max(s["recall"] for s in rows["faiss_hnsw"]["sweep"]) >= 0.95
    assert 0 < res["data"]["filter_selectivity"] < 0.05
