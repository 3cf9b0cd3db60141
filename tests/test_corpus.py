"""The bad-input corpus (tests/corpus): each entry ingested into a store that already holds good
rows, in its own process with an address-space limit and a time limit.

For every entry: the outcome is the one its case states (chips written, or refused with a message
naming the file and what is wrong), nothing on stderr is a traceback, the process stays within
its memory and time limits, and the store's good rows are unchanged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lancedb
import numpy as np
import pytest
from corpus.make_corpus import Case, build

pytestmark = pytest.mark.slow

CHIP = ["--chip-size", "64"]
TIMEOUT_S = 120
MEM_EXTRA = 3 * 2**30  # address space a case may add to the runner's (RLIMIT_AS)
RSS_EXTRA = 1536 * 2**20  # resident memory a case may add


def _rows(store: Path) -> dict[str, tuple]:
    t = lancedb.connect(str(store / "lancedb")).open_table("chips").to_arrow()
    emb = t.column("embedding").to_pylist()
    return {
        cid: (np.asarray(e, np.float32).tobytes(), g, s)
        for cid, e, g, s in zip(
            t.column("chip_id").to_pylist(),
            emb,
            t.column("geometry").to_pylist(),
            t.column("source").to_pylist(),
            strict=True,
        )
    }


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, sample_dir, nano_embedder, nano_weights):
    """The corpus built, a good store, and every case run by tests/corpus/runner.py."""
    from clay_search.ingest import run

    tmp = tmp_path_factory.mktemp("corpus")
    root = tmp / "corpus"
    cases = build(root, sample_dir)
    base = tmp / "base_store"
    good = sample_dir / "naip" / "m_4709963_se_14_1_20090818_crop.tif"
    report = run([good], base, embedder=nano_embedder, chip_size=64)
    assert report.ok and report.chips_written == 16
    good_rows = _rows(base)
    spec = {
        "weights": str(nano_weights),
        "timeout_s": TIMEOUT_S,
        "mem_extra_bytes": MEM_EXTRA,
        "cases": [],
    }
    for c in cases:
        store = tmp / "stores" / c.name
        shutil.copytree(base, store)
        argv = [
            "ingest",
            *[str(root / a) for a in c.args],
            "--store",
            str(store),
            "--weights",
            str(nano_weights),
            "--quiet",
            *CHIP,
            *c.options,
        ]
        spec["cases"].append({"name": c.name, "argv": argv, "out": str(tmp / c.name)})
    (tmp / "spec.json").write_text(json.dumps(spec))
    here = Path(__file__).parent
    subprocess.run(
        [
            sys.executable,
            str(here / "corpus" / "runner.py"),
            str(tmp / "spec.json"),
            str(tmp / "results.json"),
        ],
        check=True,
        timeout=60 * 30,
    )
    results = json.loads((tmp / "results.json").read_text())
    return {"cases": {c.name: c for c in cases}, "results": results, "tmp": tmp, "good": good_rows}


def _case_names() -> list[str]:
    import tempfile

    from conftest import SAMPLE_DIR

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in build(Path(d), SAMPLE_DIR)]


@pytest.mark.parametrize("name", _case_names())
def test_corpus_entry(corpus_run, name):
    case: Case = corpus_run["cases"][name]
    res = corpus_run["results"]["cases"][name]
    out = Path(res["stdout"]).read_text(errors="replace")
    err = Path(res["stderr"]).read_text(errors="replace")
    text = out + err
    assert res["rc"] >= 0, f"{name} was killed by signal {-res['rc']} (time or memory limit)"
    assert "Traceback" not in text, f"{name}: traceback\n{text[-3000:]}"
    assert res["rc"] != 70, text[-2000:]
    grown = res["maxrss_bytes"] - corpus_run["results"]["base_rss_bytes"]
    assert grown < RSS_EXTRA, f"{name} grew by {grown / 2**20:.0f} MiB"
    assert res["seconds"] < TIMEOUT_S
    if case.pattern:
        assert re.search(case.pattern, text), f"{name}: /{case.pattern}/ not in\n{text[-3000:]}"
    store = corpus_run["tmp"] / "stores" / name
    rows = _rows(store)
    good = corpus_run["good"]
    assert {k: rows.get(k) for k in good} == good, f"{name} changed the good rows"
    new = {k: v for k, v in rows.items() if k not in good}
    if case.expect == "ingested":
        assert res["rc"] in (0, 1), text[-2000:]
        if case.pattern is None:
            assert res["rc"] == 0, text[-2000:]
        if case.chips is not None:
            assert len(new) == case.chips, f"{name}: {len(new)} chips written\n{text[-2000:]}"
        else:
            assert new
        assert all(v[1] is not None for v in new.values()) or name == "png_without_crs"
    else:
        assert case.expect == "refused"
        assert res["rc"] in (1, 2), text[-2000:]
        assert not new, f"{name}: {len(new)} chips written but the file should be refused"
