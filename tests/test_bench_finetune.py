"""bench/finetune.py plans and normalises its chips as ``clay-search finetune`` does (the weights'
normalisation record), and every row says which bands it saw."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from clay_search.model.headfile import read_head_spec
from clay_search.tasks import backbone_record, finetune_classify, task_backbone

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "finetune.py"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_finetune", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "FRACTIONS", (1.0,))
    monkeypatch.setattr(mod, "MODELS", ("frozen",))
    return mod


def test_eurosat_rows_see_the_bands_finetune_trains_on(bench, sample_dir, tmp_path):
    """The benchmark's classic and deep rows see the same chips as a head trained by
    ``finetune_classify`` with defaults: the same bands (all 13 the weights' record keeps for
    EuroSAT MS) and the same record-based normalisation."""
    rows = bench.bench_eurosat(sample_dir, tmp_path / "bench", seed=0)
    assert [r["model"] for r in rows] == [
        "classic: band mean/std + logistic regression",
        "frozen",
    ]
    finetune_classify(
        sample_dir / "eurosat_ms",
        tmp_path / "head",
        epochs=1,
        progress=False,
        resume=False,
        val_fraction=0.3,
    )
    head = read_head_spec(tmp_path / "head")
    digest = backbone_record(task_backbone()).digest()
    assert len(head.bands) == 13 and head.normalisation["record"] == digest
    classic, frozen = rows
    assert classic["sees"]["bands"] == frozen["sees"]["bands"] == list(head.bands)
    assert classic["sees"]["record"] == frozen["sees"]["record"] == digest
    assert frozen["sees"]["head_stats"] == head.normalisation["stats"] == "auto"
    assert frozen["sees"]["stats_source"] == head.normaliser["stats_source"]
    assert classic["train_chips"] == frozen["train_chips"]
    assert classic["val_chips"] == frozen["val_chips"]
