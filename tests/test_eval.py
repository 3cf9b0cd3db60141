"""Evaluation measures (model/evaluate.py) and the `clay-search eval` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from clay_search.model.evaluate import (
    band_stat_features,
    knn_precision_at_k,
    linear_probe_accuracy,
    multilabel_precision_at_k,
    standardise,
)


def _clusters(n_per: int, n_cls: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_cls, dim)) * 5
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
    y = [f"c{i}" for i in range(n_cls) for _ in range(n_per)]
    return x.astype(np.float32), y


def test_knn_precision_separable_and_shuffled():
    g, gy = _clusters(20, 4, 8, 0.1, 0)
    q, qy = _clusters(5, 4, 8, 0.1, 0)
    assert knn_precision_at_k(q, qy, g, gy, k=10) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    shuffled = list(rng.permutation(gy))
    assert knn_precision_at_k(q, qy, g, shuffled, k=10) < 0.6
    # hand-computed: one query, neighbours by cosine are a (same label), then b
    g2 = np.array([[1.0, 0.0], [0.7, 0.7], [-1.0, 0.0]], np.float32)
    assert knn_precision_at_k(np.array([[1.0, 0.1]]), ["a"], g2, ["a", "b", "a"], k=2) == 0.5


def test_linear_probe_and_standardise():
    tr, ty = _clusters(30, 3, 6, 0.5, 2)
    te, tey = _clusters(10, 3, 6, 0.5, 2)
    assert linear_probe_accuracy(tr, ty, te, tey) > 0.95
    noise = np.random.default_rng(0).normal(size=tr.shape)
    assert linear_probe_accuracy(noise, ty, te, tey) < 0.7
    a, _b = standardise(tr, te)
    assert np.allclose(a.mean(0), 0, atol=1e-5) and np.allclose(a.std(0), 1, atol=1e-3)


def test_multilabel_precision_by_hand():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    labels = [("a",), ("a", "b"), ("c",), ("b", "c")]
    # nearest other: 0->1 (shares a), 1->0 (a), 2->3 (c), 3->2 (c)
    assert multilabel_precision_at_k(x, labels, k=1) == 1.0
    # second nearest: 0->3? sims of 0: [.., .99, 0, .11] -> 3 (no), 1->3 (b yes), ...
    p2 = multilabel_precision_at_k(x, labels, k=2)
    assert 0.5 <= p2 < 1.0


def test_band_stat_features():
    x = np.stack([np.full((2, 4, 4), v, np.float32) for v in (0.0, 1.0)])
    x[1, 1] = np.arange(16).reshape(4, 4)
    f = band_stat_features(x)
    assert f.shape == (2, 2 * 7)
    assert f[0].tolist() == [0.0] * 14
    assert f[1, 1] == pytest.approx(7.5)  # mean of band 1
    assert f[1, 2 * 4 + 1] == pytest.approx(7.5)  # p50 of band 1 (after mean, std, p5, p25)


@pytest.mark.slow
def test_eval_command_on_a_small_subset(shared_data, tmp_path):
    from clay_search.cli.main import app

    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "eval", "--data", str(shared_data), "--out", str(out), "--dataset", "eurosat_ms",
            "--dataset", "bigearthnet", "--max-gallery-per-class", "6",
            "--max-query-per-class", "3", "--threads", "2", "--direct",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["through_store"]["eurosat_ms"]["n_gallery"] == 60
    ms = report["direct"]["datasets"]["eurosat_ms"]
    assert ms["n_gallery"] == 60 and ms["n_query"] == 30
    feats = ms["features"]
    assert set(feats) == {
        "bandstats", "random:cls", "random:mean", "random:mean+std", "model:cls", "model:mean",
        "model:mean+std", "model:cls+mean", "model:shipped",
    }  # fmt: skip
    for vals in feats.values():
        assert 0.0 <= vals["knn_p10"] <= 1.0 and 0.0 <= vals["linear_probe"] <= 1.0
    # random weights are not the model: their features differ
    assert feats["random:cls"] != feats["model:cls"]
    assert report["direct"]["datasets"]["bigearthnet_benv1"]["n"] == 36
    assert "| bandstats |" in result.output


def test_eval_command_missing_data_is_one_line_error(tmp_path):
    from clay_search.cli.main import app

    result = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_eval_through_store_on_the_shipped_sample(tmp_path):
    """The evaluation ingests the chips with the CLI's defaults and scores the store's search."""
    from pathlib import Path

    import clay_search
    from clay_search.model.evaluate import knn_precision_at_k
    from clay_search.quality import evaluate_through_store

    sample = Path(__file__).resolve().parents[1] / "sample" / "eurosat_ms"
    store_dir = tmp_path / "store"
    res = evaluate_through_store(
        sample, max_gallery_per_class=None, max_query_per_class=None, k=2, rounds=1,
        per_round=3, store_dir=store_dir,
    )  # fmt: skip
    assert res.n_gallery + res.n_query == 30 and res.n_query > 0 and res.n_gallery > 0
    # what ingest decided is reported: the sensor table (values fit Clay's L2A statistics)
    assert set(res.ingest["normalisers"].values()) == {"sensor"}
    # the store's search gives the same precision as brute force over the stored vectors
    store = clay_search.connect(store_dir)
    table = store.chips().to_arrow()
    ids = table.column("chip_id").to_pylist()
    labels = np.asarray(table.column("label").to_pylist())
    from clay_search.ingest.datasets import split_of

    gal = np.array([split_of(Path(s).name) == "train" for s in table.column("source").to_pylist()])
    from clay_search.index.vectors import read_ids_and_vectors

    vid, vec = read_ids_and_vectors(store.table, store.dim)
    x = vec[[vid.to_pylist().index(c) for c in ids]]
    expect = knn_precision_at_k(x[~gal], labels[~gal], x[gal], labels[gal], k=2)
    assert res.knn_precision["model (store search)"] == pytest.approx(expect)
    assert 0.0 <= res.knn_precision["band statistics"] <= 1.0


def test_simulated_session_counts_hits_per_round():
    from clay_search.quality import simulate_session

    labels = np.array(["a"] * 6 + ["b"] * 6)
    order = np.array([0, 1, 6, 2, 7, 3, 8, 4, 9, 5, 10, 11])  # a fixed ranking, best first

    rates = simulate_session(lambda pos, neg: order, labels, "a", start=[0], rounds=3, per_round=2)
    # round 1 shows 1 (a), 6 (b); round 2: 2 (a), 7 (b); round 3: 3 (a), 8 (b)
    assert rates == [0.5, 0.5, 0.5]


def test_eval_command_through_store_on_the_sample(tmp_path):
    from pathlib import Path

    from clay_search.cli.main import app

    data = tmp_path / "data"
    data.mkdir()
    (data / "eurosat_ms").symlink_to(Path(__file__).resolve().parents[1] / "sample" / "eurosat_ms")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app, ["eval", "--data", str(data), "--dataset", "eurosat_ms", "--out", str(out), "--k", "2",
              "--rounds", "1", "--per-round", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert "eurosat_ms" in report["through_store"] and "direct" not in report
    assert "through ingest + search" in result.output and "| band statistics |" in result.output
