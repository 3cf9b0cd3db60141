"""Fine-tuning: backbone shapes per variant, train -> predict round trips on the shipped sample
(EuroSAT MS chips, NAIP crops with masks derived from their own NDVI), predictions in a store,
resuming, and bad input (a clear error each, nothing written half)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from clay_search.errors import HeadError, TrainingDataError
from clay_search.model.backbone import ClayBackbone, Metadata, default_taps
from clay_search.model.clay import VARIANTS, ClayEncoder, get_config
from clay_search.model.headfile import load_head, read_head_spec
from clay_search.model.heads import ChipModel, DenseModel
from clay_search.predict import predict_chips, predict_rasters, predict_store
from clay_search.tasks import finetune_classify, finetune_regress, finetune_segment

FAST = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False, "resume": False}


# -- backbone ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VARIANTS))
def test_backbone_shapes_every_variant(name):
    torch.manual_seed(0)
    cfg = get_config(name)
    enc = ClayEncoder.from_config(cfg).eval()
    bb = ClayBackbone(enc, freeze="all")
    x = torch.randn(2, 3, 16, 16)
    meta = Metadata(waves=torch.tensor([0.665, 0.56, 0.49]), gsd=10.0)
    with torch.no_grad():
        grids = bb.forward_grids(x, meta)
        tokens = bb.tokens(x, meta)
        ref = enc(x, time=torch.zeros(2, 4), latlon=torch.zeros(2, 4), gsd=10.0, waves=meta.waves)
        vec = bb.forward_vector(x, meta, "mean+std")
        dense = DenseModel(bb, 5)(x, meta)
        chip = ChipModel(bb, 7, head="mlp")(x, meta)
    assert bb.taps == default_taps(cfg.depth) and len(bb.taps) == 4
    assert [tuple(g.shape) for g in grids] == [(2, cfg.dim, 2, 2)] * 4
    assert torch.allclose(tokens, ref, atol=1e-5)  # block-by-block pass == the encoder's
    assert tuple(tokens.shape) == (2, 1 + 4, cfg.dim)
    assert tuple(vec.shape) == (2, 2 * cfg.dim)
    assert tuple(dense.shape) == (2, 5, 16, 16)  # full input resolution
    assert tuple(chip.shape) == (2, 7)


def test_freeze_policies():
    bb = ClayBackbone.from_weights(freeze="all")
    assert bb.fully_frozen
    bb.set_freeze(1)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("encoder.transformer.layers.3.", "encoder.transformer.norm"))
        for n in trainable
    )
    bb.set_freeze("none")
    assert all(p.requires_grad for p in bb.parameters())
    with pytest.raises(ValueError, match="last blocks"):
        bb.set_freeze(99)


def test_pyramid_levels_and_smooth_upsampling():
    from clay_search.model.heads import PyramidNeck

    neck = PyramidNeck(128, 32)
    levels = neck([torch.randn(1, 128, 8, 8)] * 4)
    assert [tuple(t.shape[-2:]) for t in levels] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in neck.modules())


# -- data helpers --------------------------------------------------------------------------------
def _ndvi_masks(sample_dir: Path, out: Path, *, kind: str = "class") -> Path:
    """Masks from the NAIP crops' own NDVI: classes 1/2/3 by tercile, or NDVI values."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in sorted((sample_dir / "naip").glob("*.tif")):
        with rasterio.open(f) as src:
            a = src.read().astype(np.float64)
            prof = src.profile
        ndvi = (a[3] - a[0]) / (a[3] + a[0] + 1e-6)
        if kind == "class":
            m = (np.digitize(ndvi, np.quantile(ndvi, [0.33, 0.66])) + 1).astype(np.uint8)
            prof.update(count=1, dtype="uint8", nodata=None)
        else:
            m = ndvi.astype(np.float32)
            prof.update(count=1, dtype="float32", nodata=None)
        mp = out / f"{f.stem}.tif"
        with rasterio.open(mp, "w", **prof) as dst:
            dst.write(m[None])
        rows.append((str(f), mp.name))
    pairs = out / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask"])
        w.writerows(rows)
    return pairs


# -- classification ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def class_head(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "head"
    run = finetune_classify(
        sample_dir / "eurosat_ms",
        out,
        epochs=15,
        lr=3e-2,
        progress=False,
        resume=False,
        val_fraction=0.3,
    )
    return out, run


def test_classify_round_trip(class_head, sample_dir, tmp_path):
    out, run = class_head
    spec = read_head_spec(out)
    assert spec.task == "classify" and len(spec.classes) == 10
    assert spec.sensor == "sentinel-2-l2a" and "nir" in spec.bands and spec.chip_size == 64
    assert (
        spec.backbone["model_id"].startswith("clay-nano") and not spec.backbone["encoder_in_folder"]
    )
    assert run.val_chips > 0 and run.train_chips + run.val_chips == 30
    assert set(run.metrics) >= {"overall_accuracy", "macro_accuracy", "f1_micro", "f1_macro"}
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 15 and "val_overall_accuracy" in rows[0]
    # the frozen-feature head learns the training chips (a real signal, not chance: 10%)
    table = tmp_path / "pred.parquet"
    rep = predict_chips(out, [sample_dir / "eurosat_ms"], table)
    df = pd.read_parquet(table)
    assert rep.chips == 30 and len(df) == 30
    assert {"source", "window", "label_pred", "score", "prob_Forest"} <= set(df.columns)
    truth = [Path(s).parent.name for s in df["source"]]
    assert (df["label_pred"] == truth).mean() > 0.5
    probs = df[[c for c in df.columns if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    import geopandas as gpd

    g = gpd.read_parquet(table)
    assert g.crs.to_epsg() == 4326 and g.geometry.notna().all()
    csv_out = tmp_path / "pred.csv"
    predict_chips(out, [next((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))], csv_out)
    assert len(pd.read_csv(csv_out)) == 1


def test_unfrozen_head_carries_its_encoder(sample_dir, tmp_path):
    out = tmp_path / "h"
    finetune_classify(sample_dir / "eurosat_ms", out, freeze=1, **{**FAST, "epochs": 1})
    spec = read_head_spec(out)
    assert spec.backbone["encoder_in_folder"] and spec.backbone["freeze"] == 1
    model, _ = load_head(out, weights=tmp_path / "nowhere")  # not needed: encoder in folder
    base = ClayBackbone.from_weights()
    changed = [
        k
        for k, v in model.backbone.encoder.state_dict().items()
        if not torch.equal(v, base.encoder.state_dict()[k])
    ]
    assert changed and all(
        k.startswith(("transformer.layers.3.", "transformer.norm")) for k in changed
    )


def test_multilabel_from_csv(sample_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    groups = {
        "AnnualCrop": "crop;vegetation",
        "PermanentCrop": "crop;vegetation",
        "Forest": "vegetation",
        "Pasture": "vegetation",
        "Industrial": "built",
        "Residential": "built",
    }
    with labels.open("w") as fh:
        fh.write("source,labels\n")
        for cls, lab in groups.items():
            for f in sorted((sample_dir / "eurosat_ms" / cls).glob("*.tif")):
                fh.write(f"{f},{lab}\n")
    out = tmp_path / "ml"
    run = finetune_classify(sample_dir / "eurosat_ms", out, labels_csv=labels, **FAST)
    assert run.spec.task == "multilabel" and run.spec.classes == ["built", "crop", "vegetation"]
    assert {"f1_micro", "f1_macro", "subset_accuracy"} <= set(run.metrics)
    df = pd.read_parquet(
        predict_chips(out, [sample_dir / "eurosat_ms" / "Forest"], tmp_path / "p.parquet").written[
            0
        ]
    )
    assert "labels_pred" in df.columns and len(df) == 3


def test_resume_continues_the_epochs(sample_dir, tmp_path):
    out = tmp_path / "r"
    kw = {**FAST, "resume": True}
    finetune_classify(sample_dir / "eurosat_ms", out, **{**kw, "epochs": 1})
    first = list(csv.DictReader((out / "metrics.csv").open()))
    run = finetune_classify(sample_dir / "eurosat_ms", out, **{**kw, "epochs": 3})
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[0] == first[0]
    assert len(run.result.rows) == 3


# -- segmentation and pixel-wise regression --------------------------------------------------------
@pytest.fixture(scope="module")
def seg_head(sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    pairs = _ndvi_masks(sample_dir, root / "masks")
    out = root / "head"
    run = finetune_segment(
        out,
        pairs=pairs,
        chip_size=64,
        stride=32,
        epochs=2,
        lr=1e-2,
        progress=False,
        resume=False,
        class_weights="balanced",
    )
    return out, run, root


def test_segment_round_trip(seg_head, sample_dir):
    out, run, root = seg_head
    spec = read_head_spec(out)
    assert spec.task == "segment" and spec.classes == ["1", "2", "3"] and spec.dense
    assert {"miou", "per_class_iou", "pixel_accuracy", "f1_macro"} <= set(run.metrics)
    held = run.spec.training["held_out_groups"]
    assert len(held) == 1  # one whole image held out, never random pixels
    img = sorted((sample_dir / "naip").glob("*.tif"))[0]
    rep = predict_rasters(out, [img], root / "pred")
    pred = Path(rep.written[0])
    assert pred.name == f"{img.stem}.tif"
    with rasterio.open(img) as a, rasterio.open(pred) as b:
        assert (b.width, b.height) == (a.width, a.height)
        assert b.crs == a.crs and b.transform == a.transform and b.count == 1
        vals = set(np.unique(b.read(1)).tolist())
    assert vals <= {1, 2, 3} and len(vals) >= 2
    assert not list((root / "pred").glob("*.tmp*"))


def test_blending_equals_single_window_where_windows_do_not_overlap(seg_head, sample_dir):
    out, _, root = seg_head
    img = sorted((sample_dir / "naip").glob("*.tif"))[0]
    a = predict_rasters(out, [img], root / "o0", overlap=0.0).written[0]
    b = predict_rasters(out, [img], root / "o5", overlap=0.5).written[0]
    with rasterio.open(a) as fa, rasterio.open(b) as fb:
        xa, xb = fa.read(1), fb.read(1)
    assert xa.shape == xb.shape == (256, 256)
    assert (xa == xb).mean() > 0.7  # same model, blended seams only change the edges


def test_pixel_regression_round_trip(sample_dir, tmp_path):
    pairs = _ndvi_masks(sample_dir, tmp_path / "ndvi", kind="value")
    out = tmp_path / "reg"
    run = finetune_regress(out, pairs=pairs, chip_size=64, stride=64, **FAST)
    assert run.spec.task == "regress-pixel" and {"rmse", "mae", "r2"} <= set(run.metrics)
    img = sorted((sample_dir / "naip").glob("*.tif"))[1]
    p = predict_rasters(out, [img], tmp_path / "pr").written[0]
    with rasterio.open(p) as r:
        v = r.read(1)
        assert r.dtypes[0] == "float32" and v.shape == (256, 256)
    assert np.isfinite(v).all() and -1.5 < float(np.nanmean(v)) < 1.5


def test_chip_regression_from_table(sample_dir, tmp_path):
    rows = []
    for f in sorted((sample_dir / "eurosat_ms").glob("*/*.tif")):
        with rasterio.open(f) as src:
            rows.append({"source": str(f), "nir": float(src.read(8).mean())})
    table = tmp_path / "targets.parquet"
    pd.DataFrame(rows).to_parquet(table)
    out = tmp_path / "creg"
    run = finetune_regress(out, targets=table, target_column="nir", **FAST)
    assert run.spec.task == "regress" and run.spec.target["std"] > 0
    df = pd.read_parquet(
        predict_chips(out, [sample_dir / "eurosat_ms" / "SeaLake"], tmp_path / "v.parquet").written[
            0
        ]
    )
    assert "value_pred" in df.columns and len(df) == 3


# -- predictions into a store ---------------------------------------------------------------------
def test_predictions_into_store_are_a_filter(class_head, sample_dir, tmp_path):
    import clay_search
    from clay_search.ingest import run as ingest

    store = tmp_path / "store"
    ingest([str((sample_dir / "eurosat_ms").resolve())], store, workers=0)
    head, _ = class_head
    before = clay_search.connect(store).version
    rep = predict_store(head, store)
    assert rep.chips == 30 and rep.table_version > before
    s = clay_search.connect(store)
    t = s.table.to_arrow()
    assert {"pred_label", "pred_score"} <= set(t.column_names)
    assert t.column("pred_label").null_count == 0
    assert len(s) == 30 and rep.index["count"] == 30
    top = pd.Series(t.column("pred_label").to_pylist()).value_counts().index[0]
    n_top = int((pd.Series(t.column("pred_label").to_pylist()) == top).sum())
    # predictions are search filters (Filters.pred_label from the store's filter engine)
    from clay_search.filters import Filters

    if "pred_label" not in Filters.__dataclass_fields__:
        pytest.skip("this checkout's Filters has no pred_label yet (store engineer's change)")
    res = s.chips(pred_label=top)
    assert len(res) == n_top
    again = predict_store(head, store)  # a second run replaces the columns, no duplicates
    assert clay_search.connect(store).table.count_rows() == 30 and again.chips == 30


# -- bad input ------------------------------------------------------------------------------------
def test_one_class_folder_is_refused(sample_dir, tmp_path):
    data = tmp_path / "one"
    (data / "Forest").mkdir(parents=True)
    for f in (sample_dir / "eurosat_ms" / "Forest").glob("*.tif"):
        (data / "Forest" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(TrainingDataError, match="at least two classes"):
        finetune_classify(data, tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


def test_mask_of_another_size_is_refused(sample_dir, tmp_path):
    img = sorted((sample_dir / "naip").glob("*.tif"))[0]
    mask = tmp_path / "m.tif"
    with rasterio.open(
        mask, "w", driver="GTiff", width=100, height=90, count=1, dtype="uint8"
    ) as d:
        d.write(np.ones((1, 90, 100), np.uint8))
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"image,mask\n{img},{mask}\n")
    with pytest.raises(TrainingDataError, match="100x90 px but image"):
        finetune_segment(tmp_path / "out", pairs=pairs, **FAST)
    assert not (tmp_path / "out").exists()


def test_unknown_class_values_are_refused(sample_dir, tmp_path):
    pairs = _ndvi_masks(sample_dir, tmp_path / "m")
    with pytest.raises(TrainingDataError, match=r"class values \[3\]"):
        finetune_segment(tmp_path / "out", pairs=pairs, classes=[1, 2], **FAST)
    assert not (tmp_path / "out").exists()


def test_head_on_other_bands_or_sensor(class_head, seg_head, sample_dir, tmp_path):
    head, _ = class_head
    naip = sorted((sample_dir / "naip").glob("*.tif"))[0]
    with pytest.raises(HeadError, match="trained on sentinel-2-l2a bands"):
        predict_chips(head, [naip], tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
    seg, _, _ = seg_head
    ms = next((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))
    with pytest.raises(HeadError, match="trained on naip"):
        predict_rasters(seg, [ms], tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_corrupt_head_folder(class_head, tmp_path):
    head, _ = class_head
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("head.json", "head.safetensors"):
        (bad / f).write_bytes((head / f).read_bytes())
    data = (bad / "head.safetensors").read_bytes()
    (bad / "head.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(HeadError, match="checksum"):
        load_head(bad)
    (bad / "head.json").write_text("{not json")
    with pytest.raises(HeadError, match="not valid JSON"):
        load_head(bad)
    doc = json.loads((head / "head.json").read_text())
    doc.pop("tensors_sha256")
    (bad / "head.json").write_text(json.dumps(doc))
    with pytest.raises(HeadError, match="not a readable safetensors"):
        load_head(bad)
    with pytest.raises(HeadError, match="not a head folder"):
        load_head(tmp_path / "missing")


def test_cli_errors_are_one_line(sample_dir, tmp_path):
    data = tmp_path / "one"
    (data / "A").mkdir(parents=True)
    f = next((sample_dir / "eurosat_ms" / "Forest").glob("*.tif"))
    (data / "A" / f.name).write_bytes(f.read_bytes())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clay_search.cli.main",
            "finetune",
            "classify",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "at least two classes" in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clay_search.cli.main",
            "predict",
            "--head",
            str(tmp_path),
            str(f),
            "--out",
            str(tmp_path / "p.csv"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "not a head folder" in r.stderr
