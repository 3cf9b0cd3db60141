"""The per-chip quality score (recon_error): the shipped weights' masked reconstruction error,
computed at ingest, stored, filterable, sortable and shown in the app.

The store is ingested (real pipeline, shipped weights with their decoder) from a copy of sample
EuroSAT MS GeoTIFFs plus copies of one of them made bad: a bright cloud over most of the chip,
and a broken read (every other row saturated). Both must score clearly worse than every clean
chip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
import torch
from typer.testing import CliRunner

import clay_search
from clay_search.errors import QueryError
from clay_search.filters import Filters

CLEAN = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Industrial",
    "Pasture",
    "Residential",
    "River",
    "SeaLake",
]
BAD = ("cloud", "stripes")


def _write_like(src: Path, dst: Path, pixels: np.ndarray) -> None:
    with rasterio.open(src) as f:
        profile, tags = f.profile, [f.descriptions, f.tags()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(pixels.astype(profile["dtype"]))
        out.descriptions = tags[0]
        out.update_tags(**tags[1])


def make_bad(src: Path, dst: Path, kind: str) -> None:
    """A copy of ``src`` made bad: ``cloud`` (a bright, smooth, slightly textured blob over
    most of the chip, as thick cloud looks in L1C reflectance) or ``stripes`` (every other
    row saturated, as a broken read)."""
    with rasterio.open(src) as f:
        px = f.read().astype(np.float32)
    _c, h, w = px.shape
    if kind == "cloud":
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-(((yy - h * 0.45) / (h * 0.4)) ** 2 + ((xx - w * 0.55) / (w * 0.45)) ** 2))
        rng = np.random.default_rng(0)
        texture = 1 + 0.05 * rng.standard_normal((h, w))
        cloud = 7000.0 * texture
        alpha = np.clip(blob * 1.4, 0, 1)
        px = px * (1 - alpha) + cloud * alpha
    elif kind == "stripes":
        px[:, ::2] = 10000.0
    else:
        raise ValueError(kind)
    _write_like(src, dst, np.clip(px, 0, 65535))


@pytest.fixture(scope="module")
def quality_sources(sample_dir: Path, tmp_path_factory) -> Path:
    """Eight clean sample chips (one per class) and two bad copies of the River chip."""
    root = tmp_path_factory.mktemp("quality_src")
    for cls in CLEAN:
        f = sorted((sample_dir / "eurosat_ms" / cls).glob("*.tif"))[0]
        (root / cls).mkdir()
        shutil.copy2(f, root / cls / f.name)
    river = sorted((sample_dir / "eurosat_ms" / "River").glob("*.tif"))[0]
    for kind in BAD:
        make_bad(river, root / f"bad_{kind}" / f"{kind}_{river.name}", kind)
    return root


def _ingest(sources: Path, store: Path, **options):
    from clay_search.ingest import ingest

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ingest([sources], store, precision="fp32", progress=False, **options)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def quality_store(quality_sources: Path, tmp_path_factory) -> Path:
    """The sources ingested with the shipped weights (quality score on by default)."""
    store = tmp_path_factory.mktemp("quality_store") / "store"
    report = _ingest(quality_sources, store)
    assert report.ok and report.chips_written == len(CLEAN) + len(BAD), report
    return store


def _scores(store: Path) -> dict[str, float]:
    df = clay_search.connect(store).chips().to_pandas()
    return {
        ("bad_" + str(s).split("/bad_")[1].split("/")[0]) if "/bad_" in str(s) else lab: float(q)
        for s, lab, q in zip(df["source"], df["label"], df["recon_error"], strict=True)
    }


def test_shipped_weights_have_a_decoder() -> None:
    from clay_search.model import Embedder

    e = Embedder.from_weights(precision="fp32")
    assert e.has_decoder
    rep = e.quality_report()
    # the pretraining decoder, saved with the encoder in the weights file
    assert rep["decoder"] and rep["mask_ratio"] == 0.75 and "model.safetensors" in rep["note"]


def test_bad_chips_score_clearly_worse(quality_store: Path) -> None:
    scores = _scores(quality_store)
    clean = np.array([scores[c] for c in CLEAN])
    assert np.all(np.isfinite(clean)) and np.all(clean > 0)
    for kind in BAD:
        bad = scores[f"bad_{kind}"]
        # clearly worse: above every clean chip, and by a margin over the typical clean chip
        assert bad > clean.max() and bad > 1.5 * np.median(clean), (kind, bad, clean)


def test_score_is_deterministic(quality_sources: Path, quality_store: Path, tmp_path) -> None:
    # same chips, another store, another batch size (each chip alone): the same scores
    again = _ingest(quality_sources, tmp_path / "again", batch_size=1)
    assert again.ok
    a, b = _scores(quality_store), _scores(tmp_path / "again")
    assert a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k


def test_filter_and_sort(quality_store: Path) -> None:
    st = clay_search.connect(quality_store)
    scores = _scores(quality_store)
    limit = max(scores[c] for c in CLEAN) * 1.01
    kept = st.chips(max_recon_error=limit).to_pandas()
    assert len(kept) == len(CLEAN) and (kept["recon_error"] <= limit).all()
    assert not any("bad_" in s for s in kept["source"])
    report = st.count(Filters(max_recon_error=limit))
    assert report["removed"]["recon_error"] == len(BAD) and report["unscored"] == 0
    worst = st.chips(sort="recon_error", limit=2).to_pandas()
    assert all("bad_" in s for s in worst["source"])
    best = st.chips(sort="recon_error", ascending=True).to_pandas()["recon_error"].to_numpy()
    assert np.all(np.diff(best) >= 0)
    # a search takes the same filter
    ids = st.chips(label="Forest").chip_ids
    hits = st.search(ids, k=20, max_recon_error=limit).to_pandas()
    assert not any("bad_" in s for s in hits["source"])
    assert st.overview()["quality"]["scored"] == len(CLEAN) + len(BAD)
    with pytest.raises(QueryError, match="max_recon_error"):
        Filters(max_recon_error=-1)
    with pytest.raises(QueryError, match="sort by"):
        st.chips(sort="label")


def test_cli_chips_sort_and_filter(quality_store: Path) -> None:
    from clay_search.cli.main import app

    res = CliRunner().invoke(
        app,
        ["chips", "--store", str(quality_store), "--sort", "recon_error", "--limit", "2"],
        env={"COLUMNS": "250"},
    )
    assert res.exit_code == 0, res.output
    assert "recon_error" in res.output
    st = clay_search.connect(quality_store)
    worst = st.chips(sort="recon_error", limit=1).chip_ids[0]
    assert worst in res.output
    scores = _scores(quality_store)
    limit = max(scores[c] for c in CLEAN) * 1.01
    res = CliRunner().invoke(
        app, ["chips", "--store", str(quality_store), "--max-recon-error", f"{limit:.6f}"]
    )
    assert res.exit_code == 0, res.output
    assert f"{len(CLEAN)} of {len(CLEAN) + len(BAD)} chips match" in res.output
    assert "recon_error: 2" in res.output
    bad = CliRunner().invoke(app, ["chips", "--store", str(quality_store), "--sort", "nope"])
    assert bad.exit_code == 2 and "sort by" in bad.output


def test_no_quality_score_option(quality_sources: Path, tmp_path) -> None:
    from clay_search.cli.main import app

    rep = _ingest(quality_sources / "Forest", tmp_path / "s", quality_score=False)
    assert rep.ok
    df = clay_search.connect(tmp_path / "s").chips().to_pandas()
    assert df["recon_error"].isna().all()
    for flag, scored in (("--no-quality-score", False), ("--quality-score", True)):
        out = tmp_path / flag.strip("-")
        args = ["ingest", str(quality_sources / "Forest"), "--store", str(out), flag]
        res = CliRunner().invoke(app, [*args, "--precision", "fp32"])
        assert res.exit_code == 0, res.output
        df = clay_search.connect(out).chips().to_pandas()
        assert df["recon_error"].notna().all() == scored


def test_weights_without_decoder_give_null(nano_weights: Path, quality_sources, tmp_path) -> None:
    from clay_search.model import Embedder

    e = Embedder.from_weights(nano_weights, precision="fp32")
    assert not e.has_decoder and "no decoder" in e.quality_report()["note"]
    pixels = np.zeros((1, 3, 64, 64), np.float32)
    out = e.embed(pixels, waves=[0.49, 0.56, 0.66], gsd=10, recon_error=True)
    assert out.recon_error is None
    rep = _ingest(quality_sources / "Forest", tmp_path / "s", weights=nano_weights)
    assert rep.ok and any("quality score not computed" in n for n in rep.notes)
    df = clay_search.connect(tmp_path / "s").chips().to_pandas()
    assert df["recon_error"].isna().all()
    st = clay_search.connect(tmp_path / "s")
    assert len(st.chips(max_recon_error=0.1)) == len(df)  # unscored chips are kept
    assert st.count(max_recon_error=0.1)["unscored"] == len(df)


def test_store_without_the_column(quality_sources: Path, tmp_path) -> None:
    """A store made before the column: reads work, the filter keeps everything and says so,
    sorting is refused with a reason, and a new ingest into it notes the score is not kept."""
    from clay_search.location import connect_lancedb
    from clay_search.model import Embedder
    from clay_search.schema import chips_schema
    from clay_search.store import open_or_create_store

    e = Embedder.from_weights(precision="fp32")
    info = open_or_create_store(tmp_path / "old", e.model_id, e.dim)
    old = chips_schema(e.dim)
    old = pa.schema([f for f in old if f.name != "recon_error"], metadata=old.metadata)
    db = connect_lancedb(info.path / "lancedb")
    db.create_table("chips", schema=old)
    rep = _ingest(quality_sources / "Forest", tmp_path / "old")
    assert rep.ok and rep.chips_written == 1
    assert any("made before the recon_error column" in n for n in rep.notes)
    st = clay_search.connect(tmp_path / "old")
    assert "recon_error" not in st.table.schema.names
    assert len(st.chips(max_recon_error=0.1)) == 1
    assert st.count(max_recon_error=0.1)["unscored"] == 1
    assert st.overview()["quality"] is None
    with pytest.raises(QueryError, match="no 'recon_error' column"):
        st.chips(sort="recon_error")


def test_decoder_file_is_tied_to_its_encoder(nano_weights: Path, tmp_path) -> None:
    from clay_search.model.checkpoints import (
        DECODER_FILE,
        load_decoder,
        load_encoder,
        save_decoder,
    )

    folder = tmp_path / "w"
    shutil.copytree(nano_weights, folder)
    _, shipped = load_encoder(None)
    shipped_decoder, _ = load_decoder(shipped)
    assert shipped_decoder is not None
    # the shipped encoder's decoder, written as a side file beside other weights
    save_decoder(shipped_decoder, shipped, folder / DECODER_FILE)
    _, info = load_encoder(folder)
    dec, note = load_decoder(info)
    assert dec is None and "was trained for encoder" in note


def test_mask_groups_partition_every_patch() -> None:
    from clay_search.model.reconstruction import mask_groups

    groups = mask_groups(64)
    assert len(groups) == 4 and all(len(g) == 16 for g in groups)
    assert torch.equal(torch.sort(torch.cat(groups)).values, torch.arange(64))
    torch.manual_seed(123)  # the global RNG does not move the masks
    assert all(torch.equal(a, b) for a, b in zip(groups, mask_groups(64), strict=True))


def test_app_shows_and_filters_the_score(quality_store: Path, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    script = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(quality_store))
    monkeypatch.delenv("CLAY_SEARCH_WEIGHTS", raising=False)
    at = AppTest.from_file(str(script), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("recon " in c.value for c in at.caption)  # on the cards
    st = clay_search.connect(quality_store)
    worst = st.chips(sort="recon_error", limit=1).chip_ids[0]
    at.selectbox(key="browse-order").set_value("Quality score: worst first").run()
    assert not at.exception
    ids = [b.key.removeprefix("browse-pos-") for b in at.button if b.key.startswith("browse-pos-")]
    assert ids[0] == worst
    at.checkbox(key="f-quality-on").check().run()
    scores = _scores(quality_store)
    at.slider(key="f-quality").set_value(max(scores[c] for c in CLEAN) * 1.01).run()
    assert not at.exception
    ids = [b.key.removeprefix("browse-pos-") for b in at.button if b.key.startswith("browse-pos-")]
    assert len(ids) == len(CLEAN) and worst not in ids


def _tiny_set():
    from clay_search.model.train import ChipSet

    rng = np.random.default_rng(0)
    px = rng.uniform(0, 255, (8, 3, 32, 32)).astype(np.float32)
    waves = [0.665, 0.56, 0.493]
    return ChipSet("tiny", px, px.mean((0, 2, 3)), px.std((0, 2, 3)), waves, 10.0, ["r", "g", "b"])


def test_train_saves_the_decoder(tmp_path) -> None:
    from clay_search.model.checkpoints import load_decoder, load_encoder
    from clay_search.model.train import TrainConfig, train

    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, checkpoint_every=10, precision="fp32")
    train([_tiny_set()], tmp_path / "w", cfg)
    _, info = load_encoder(tmp_path / "w")
    dec, note = load_decoder(info)
    assert dec is not None and "model.safetensors" in note


def test_train_decoder_for_frozen_weights(nano_weights: Path, tmp_path) -> None:
    from clay_search.model.checkpoints import DECODER_FILE, load_decoder, load_encoder
    from clay_search.model.train import train_decoder

    folder = tmp_path / "w"
    shutil.copytree(nano_weights, folder)
    encoder, info = load_encoder(folder)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    res = train_decoder(encoder, info, [_tiny_set()], folder / DECODER_FILE, steps=2, batch_size=4)
    assert res.steps_done == 2 and len(res.losses) == 2
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # frozen
    _, info2 = load_encoder(folder)
    assert info2.model_id == info.model_id
    dec, note = load_decoder(info2)
    assert dec is not None and DECODER_FILE in note


def test_map_colours_chips_by_quality_score(quality_store: Path, monkeypatch) -> None:
    """The map's "Colour by quality score": the worst chips are red, the best green, a legend
    says what the colours mean, the tooltip gives the score; off again: neutral fills."""
    from streamlit.testing.v1 import AppTest

    from clay_search.app import layers

    script = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
    monkeypatch.setenv("CLAY_SEARCH_STORE", str(quality_store))
    monkeypatch.delenv("CLAY_SEARCH_WEIGHTS", raising=False)
    at = AppTest.from_file(str(script), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]

    def chips() -> dict[str, dict]:
        (comp,) = at.get("component_instance")
        args = json.loads(comp.proto.json_args)
        return {c["chip_id"]: c for c in args["chips"]}

    assert not any("clay-quality-legend" in m.value for m in at.markdown)
    at.toggle(key="color-by-quality").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    st = clay_search.connect(quality_store)
    df = st.chips().to_pandas()
    scores = dict(zip(df["chip_id"], df["recon_error"].astype(float), strict=True))
    worst = max(scores, key=scores.get)
    best = min(scores, key=scores.get)
    got = chips()
    red, green = layers._QUALITY_RAMP[-1].astype(int), layers._QUALITY_RAMP[0].astype(int)
    assert got[worst]["fill"][:3] == list(red) and got[best]["fill"][:3] == list(green)
    assert f"recon_error {scores[worst]:.3f}" in got[worst]["tip"]
    # every chip at or above the store's 95th percentile is full red
    p95 = st.overview()["quality"]["p95"]
    assert all(got[c]["fill"][:3] == list(red) for c, v in scores.items() if v >= p95)
    legend = " ".join(m.value for m in at.markdown if "clay-quality-legend" in m.value)
    assert "Quality score (recon_error)" in legend and f"{p95:.3f}" in legend
    at.toggle(key="color-by-quality").set_value(False).run()
    assert {tuple(c["fill"][:3]) for c in chips().values()} == {(120, 144, 156)}
    assert not any("clay-quality-legend" in m.value for m in at.markdown)
