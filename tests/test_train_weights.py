"""The shipped weights (model/weights/): present, loadable by default, documented, and better
than the same architecture with random weights on held-out EuroSAT MS chips."""

from __future__ import annotations

import csv
import json

import torch

from clay_search.model.checkpoints import bundled_weights_dir, load_encoder


def test_shipped_weights_are_the_default_and_small():
    d = bundled_weights_dir()
    for name in ("model.safetensors", "config.json", "MODEL_CARD.md", "losses.csv",
                 "loss_curve.png", "eval_report.json"):  # fmt: skip
        assert (d / name).exists(), name
    # encoder (9 MB) and its pretraining decoder (5 MB) in one file: the quality score's decoder
    # ships with the weights
    assert (d / "model.safetensors").stat().st_size < 16 * 2**20
    _encoder, info = load_encoder(None)
    cfg = json.loads((d / "config.json").read_text())
    assert info.model_id == cfg["model_id"] and info.config.name == "nano"
    assert cfg["training"]["steps_done"] > 1000 and cfg["training"]["teacher"] is False
    assert cfg["normalisation"]["version"] == 2 and "eurosat_ms" in cfg["normalisation"]["series"]
    report = json.loads((d / "eval_report.json").read_text())
    assert report["model_id"] == info.model_id  # the card's table is of these weights
    assert report["model_id"] in (d / "MODEL_CARD.md").read_text()


def test_loss_log_falls():
    """The shipped log is of the last stage (continued from trained weights, with the view
    loss): reconstruction still falls, the view loss (new at that stage) falls well below its
    start, and the log is the one the config describes."""
    d = bundled_weights_dir()
    rows = list(csv.DictReader((d / "losses.csv").open()))
    cfg = json.loads((d / "config.json").read_text())["training"]
    assert len(rows) == cfg["steps_done"]
    loss = [float(r["reconstruction_loss"]) for r in rows]
    assert sum(loss[-200:]) / 200 < 0.95 * sum(loss[:200]) / 200
    assert abs(sum(loss[-100:]) / 100 - cfg["final_loss_mean_last100"]) < 1e-6
    if cfg.get("view_loss"):
        view = [float(r["view_loss"]) for r in rows]
        assert sum(view[-200:]) / 200 < 0.8 * sum(view[:200]) / 200


def test_shipped_model_beats_random_weights_on_eurosat_ms(shared_data):

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _compare_with_random(shared_data)
    finally:
        torch.set_num_threads(before)


def _compare_with_random(shared_data):
    from clay_search.ingest.datasets import eurosat_eval_sets
    from clay_search.model.clay import ClayEncoder
    from clay_search.model.evaluate import encoder_features, knn_precision_at_k, standardise

    gallery, queries = eurosat_eval_sets(shared_data / "eurosat_ms", kind="ms")
    encoder, info = load_encoder(None)
    torch.manual_seed(0)
    random_encoder = ClayEncoder.from_config(info.config).eval()
    scores = {}
    for tag, enc in (("model", encoder), ("random", random_encoder)):
        fg, fq = (
            encoder_features(enc, s.normalised(), waves=s.waves, gsd=s.gsd, lonlats=s.lonlats)[
                "mean+std"
            ]
            for s in (gallery, queries)
        )
        gs, qs = standardise(fg, fq)
        scores[tag] = knn_precision_at_k(qs, queries.labels, gs, gallery.labels, k=10)
    assert scores["model"] > scores["random"] + 0.05, scores
