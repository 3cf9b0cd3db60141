"""A store knows the normalisation policy its vectors were made with and refuses another.

One model id over differently normalised pixels gives vectors that do not compare (issue 18):
ingest records the policy (``--stats`` mode, the weights' normalisation record, the decision
rules' version) in ``store.json`` and refuses to add vectors made under another one, saying how
to fix it; a store made before the record keeps working (unknown, said once, then recorded).
Real ingests of the shipped EuroSAT MS sample with the shipped weights.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import clay_search
from clay_search.errors import StoreMismatchError
from clay_search.ingest import run as ingest
from clay_search.model.embedder import Embedder
from clay_search.model.normalise import DECISION_VERSION, normalisation_policy
from clay_search.store.layout import POLICY_KEYS, read_store_info

WEIGHTS = Path(__file__).resolve().parents[1] / "model" / "weights"


@pytest.fixture(scope="module")
def embedder():
    return Embedder.from_weights(None, precision="fp32")


@pytest.fixture
def forest(sample_dir, tmp_path) -> Path:
    """Three EuroSAT MS chips of one class (a labelled folder)."""
    out = tmp_path / "data" / "Forest"
    shutil.copytree(sample_dir / "eurosat_ms" / "Forest", out)
    return out.parent


def _meta(store: Path) -> dict:
    return json.loads((store / "store.json").read_text())


def _count(store: Path) -> int:
    return clay_search.connect(store).table.count_rows()


def test_the_store_records_the_policy_and_refuses_another(forest, tmp_path, embedder):
    store = tmp_path / "s"
    rep = ingest([str(forest)], store, workers=0, embedder=embedder)
    assert rep.chips_written == 3
    policy = _meta(store)["normalisation"]
    want = normalisation_policy("auto", embedder.normalisation)
    assert {k: policy.get(k) for k in POLICY_KEYS} == {k: want.get(k) for k in POLICY_KEYS}
    assert policy["record"] == embedder.normalisation.digest()
    assert policy["decision"] == DECISION_VERSION
    assert read_store_info(store).normalisation == policy
    with pytest.raises(StoreMismatchError, match=r"--stats auto.*pass --stats auto.*new store"):
        ingest([str(forest)], store, workers=0, embedder=embedder, stats="sensor")
    assert _count(store) == 3 and _meta(store)["normalisation"] == policy
    # the refused writer gave the lock back: the matching ingest goes on (nothing duplicated)
    again = ingest([str(forest)], store, workers=0, embedder=embedder)
    assert again.chips_written == 0 and _count(store) == 3
    assert not any("made before stores recorded" in n for n in again.notes)


def test_same_model_id_with_another_record_is_refused(forest, tmp_path, embedder):
    """The case the issue names: weights whose normalisation record changed under the same
    model id (the config's record edited) must not add to the store."""
    store = tmp_path / "s"
    ingest([str(forest)], store, workers=0, embedder=embedder)
    other = tmp_path / "weights"
    shutil.copytree(WEIGHTS, other)
    cfg = json.loads((other / "config.json").read_text())
    series = cfg["normalisation"]["series"]["eurosat_ms"]
    series["mean"] = [m * 1.01 for m in series["mean"]]
    (other / "config.json").write_text(json.dumps(cfg))
    changed = Embedder.from_weights(other, precision="fp32")
    assert changed.model_id == embedder.model_id
    assert changed.normalisation.digest() != embedder.normalisation.digest()
    with pytest.raises(StoreMismatchError, match="another normalisation record.*new store"):
        ingest([str(forest)], store, workers=0, embedder=changed)
    assert _count(store) == 3


def test_other_decision_rules_are_refused(forest, tmp_path, embedder):
    store = tmp_path / "s"
    ingest([str(forest)], store, workers=0, embedder=embedder)
    meta = _meta(store)
    meta["normalisation"]["decision"] = DECISION_VERSION - 1
    (store / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreMismatchError, match="older normalisation rules.*re-ingesting"):
        ingest([str(forest)], store, workers=0, embedder=embedder)


def test_old_store_without_a_record_warns_once_then_is_checked(forest, tmp_path, embedder):
    store = tmp_path / "s"
    ingest([str(forest)], store, workers=0, embedder=embedder)
    meta = _meta(store)
    del meta["normalisation"]  # as a store written before stores kept the policy
    (store / "store.json").write_text(json.dumps(meta))
    assert read_store_info(store).normalisation is None
    first = ingest([str(forest)], store, workers=0, embedder=embedder)
    warned = [n for n in first.notes if "made before stores recorded" in n]
    assert len(warned) == 1 and "re-ingest into a new store" in warned[0]
    rec = _meta(store)["normalisation"]
    assert rec["earlier_rows"] == "unknown" and rec["stats"] == "auto"
    second = ingest([str(forest)], store, workers=0, embedder=embedder)
    assert not any("made before stores recorded" in n for n in second.notes)
    with pytest.raises(StoreMismatchError, match="pass --stats auto"):
        ingest([str(forest)], store, workers=0, embedder=embedder, stats="source")
    assert _count(store) == 3


def test_empty_store_without_a_record_takes_the_policy_silently(forest, tmp_path, embedder):
    from clay_search.store import open_or_create_store

    store = tmp_path / "s"
    open_or_create_store(store, embedder.model_id, embedder.dim)  # no policy, no rows
    rep = ingest([str(forest)], store, workers=0, embedder=embedder)
    assert rep.chips_written == 3
    assert not any("made before stores recorded" in n for n in rep.notes)
    rec = _meta(store)["normalisation"]
    assert rec["stats"] == "auto" and "earlier_rows" not in rec


def test_statistics_file_is_part_of_the_policy(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"red": {"mean": 1.0, "std": 2.0}}))
    pa = normalisation_policy(str(a), None)
    assert pa["stats"] == "file" and pa["stats_file"] == "a.json" and pa["record"] is None
    a.write_text(json.dumps({"red": {"mean": 1.5, "std": 2.0}}))
    assert normalisation_policy(str(a), None)["stats_file_sha256"] != pa["stats_file_sha256"]


def test_cli_refusal_is_one_line(forest, tmp_path, embedder):
    store = tmp_path / "s"
    ingest([str(forest)], store, workers=0, embedder=embedder)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clay_search.cli.main",
            "ingest",
            str(forest),
            "--store",
            str(store),
            "--stats",
            "sensor",
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in err, err
    assert "normalised with --stats auto" in err and "pass --stats auto" in err, err
    assert _count(store) == 3
