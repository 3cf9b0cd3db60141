"""Change benchmark: embedding change scores vs pixel change vector analysis (CVA).

OSCD (../shared/data/oscd, 10 cities, Sentinel-2 L1C pairs with urban-change masks): both dates
of every city are ingested into one store (32 px chips, patch embeddings, bundled weights,
``--stats source``: each file normalised with its own band statistics, as CVA does) and
``store.changes()`` scores every place. Reported per method:

- chip-level ROC AUC (a chip is "changed" when >= ``--chip-frac`` of its pixels are), pooled
  over the cities, and the mean of the per-city AUCs;
- per-pixel F1 and IoU with the threshold chosen leave-one-city-out (the F1-best threshold on
  the other 9 cities, applied to the held-out city; counts summed over the held-out cities).
  Pixel scores: CVA per pixel; ``cosine`` gives each pixel its chip's score; ``patch`` gives it
  its 8 px patch's distance.

CVA: each date's bands standardised with that date's own band mean/std over the city, then the
Euclidean distance between the dates per pixel (chip score = mean over the chip).

Supervised head (``--folds K``, default 5; 0 = off): the change head of ``clay-search finetune
change`` (frozen bundled encoder, 64 px chips every 32 px, ``concat+diff`` fusion, balanced class
weights, AdamW lr 5e-3, ``--sup-epochs`` epochs, the last kept: no validation city is taken
from the training cities) trained K times on the other cities' pairs (cities split into K folds in
``cities.csv`` order) and applied with ``predict_change`` to each held-out city: every city's
probability map comes from a head that never saw it. Chip score = the mean probability over the
chip; pixels scored like the others (threshold leave-one-city-out).

NAIP (../shared/data/opengeos/naip, 10 dates 2009-2020): ingested (64 px chips), the top
changes between 2009-2012 and 2018-2020 and the timeline of the top place rendered as PNGs
(from the source files, RGB) for a person to look at.

    .venv/bin/python bench/change.py --out /tmp/change_bench
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()
OSCD_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    pos = labels.astype(bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the highest F1 on these pixels (over 200 quantiles)."""
    qs = np.unique(np.quantile(scores, np.linspace(0.5, 0.999, 200)))
    best, at = -1.0, float(qs[-1])
    pos = labels.astype(bool)
    for t in qs:
        pred = scores >= t
        tp = float(np.sum(pred & pos))
        f1 = 2 * tp / max(float(pred.sum() + pos.sum()), 1.0)
        if f1 > best:
            best, at = f1, float(t)
    return at


def pixel_scores_loco(pix: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Leave-one-city-out F1/IoU of per-pixel scores."""
    tp = fp = fn = 0.0
    per_city = {}
    for city in pix:
        train_s = np.concatenate([pix[c].ravel() for c in pix if c != city])
        train_m = np.concatenate([masks[c].ravel() for c in pix if c != city])
        sub = np.random.default_rng(0).choice(
            len(train_s), min(len(train_s), 400_000), replace=False
        )
        t = best_threshold(train_s[sub], train_m[sub])
        pred = pix[city] >= t
        m = masks[city].astype(bool)
        a, b, c = float(np.sum(pred & m)), float(np.sum(pred & ~m)), float(np.sum(~pred & m))
        tp, fp, fn = tp + a, fp + b, fn + c
        per_city[city] = round(2 * a / max(2 * a + b + c, 1), 3)
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "iou": tp / max(tp + fp + fn, 1),
        "f1_per_city": per_city,
    }


def cva(pre: np.ndarray, post: np.ndarray) -> np.ndarray:
    """Per-pixel change vector magnitude of band-wise standardised dates ``[C, H, W]``."""

    def z(x):
        x = x.astype(np.float64)
        m = x.mean(axis=(1, 2), keepdims=True)
        s = x.std(axis=(1, 2), keepdims=True) + 1e-6
        return (x - m) / s

    return np.sqrt(np.sum((z(post) - z(pre)) ** 2, axis=0)).astype(np.float32)


def supervised_maps(out: Path, cities: list[dict], folds: int, epochs: int) -> tuple[dict, dict]:
    """Held-out change-probability maps per city (K-fold by city) and the timings."""
    import rasterio

    from clay_search.change_task import finetune_change, predict_change

    root = DATA / "oscd"
    names = [c["city"] for c in cities]
    fold_of = {n: i % folds for i, n in enumerate(names)}
    maps, train_s, predict_s = {}, 0.0, 0.0
    for k in range(folds):
        train = [n for n in names if fold_of[n] != k]
        test = [n for n in names if fold_of[n] == k]
        t = time.perf_counter()
        run = finetune_change(
            out / f"oscd_head_fold{k}_{epochs}",
            pairs=[
                (root / n / "pre.tif", root / n / "post.tif", root / n / "cm.tif") for n in train
            ],
            chip_size=64,
            stride=32,
            sensor="sentinel-2-l2a",
            bands=OSCD_BANDS,
            epochs=epochs,
            batch_size=16,
            lr=5e-3,
            val_fraction=0.0,
            keep="last",
            progress=False,
        )
        train_s += time.perf_counter() - t
        print(f"fold {k}: trained on {len(train)} cities ({run.train_chips} chips)", flush=True)
        t = time.perf_counter()
        for n in test:
            dst = out / f"oscd_change_{n}_{epochs}.tif"
            predict_change(run.head, root / n / "pre.tif", root / n / "post.tif", dst)
            with rasterio.open(dst) as f:
                maps[n] = np.nan_to_num(f.read(1), nan=0.0)
        predict_s += time.perf_counter() - t
    px = sum(m.size for m in maps.values())
    return maps, {
        "train_seconds_total": round(train_s, 1),
        "predict_seconds_total": round(predict_s, 1),
        "predict_seconds_per_megapixel": round(predict_s / px * 1e6, 2),
    }


def oscd(
    out: Path, chip: int, chip_frac: float, stats: str, folds: int = 0, sup_epochs: int = 20
) -> dict:
    import rasterio

    import clay_search
    from clay_search.ingest import run
    from clay_search.model import Embedder

    root = DATA / "oscd"
    cities = list(csv.DictReader((root / "cities.csv").open()))
    store_path = out / f"oscd_store_{chip}_{stats}"
    emb = Embedder.from_weights(None, precision="fp32")
    t0 = time.perf_counter()
    if not store_path.exists():
        for c in cities:
            for which, date in (("pre", c["date_pre"]), ("post", c["date_post"])):
                run(
                    [str(root / c["city"] / f"{which}.tif")],
                    store_path,
                    chip_size=chip,
                    sensor="sentinel-2-l2a",
                    bands=OSCD_BANDS,
                    patch_embeddings=True,
                    datetime=f"{date[:4]}-{date[4:6]}-{date[6:]}",
                    embedder=emb,
                    workers=0,
                    stats=stats,
                )
    ingest_s = time.perf_counter() - t0
    store = clay_search.connect(store_path)
    before, after = ("2015-01-01", "2016-12-31"), ("2017-01-01", "2018-12-31")
    results, timing = {}, {}
    for method in ("cosine", "patch", "normalised"):
        store = clay_search.connect(store_path)  # cold: place ids and vectors read again
        t = time.perf_counter()
        res = store.changes(before, after, method=method)
        timing[method] = time.perf_counter() - t
        results[method] = res.to_pandas()
    n_places = len(results["cosine"])
    # ground truth and CVA per chip; pixel maps per city
    masks, cva_pix, cos_pix, patch_pix = {}, {}, {}, {}
    chip_rows = []
    patch_tokens = _patch_distance_maps(store_path, results["patch"], chip)
    for c in cities:
        city = c["city"]
        with (
            rasterio.open(root / city / "pre.tif") as a,
            rasterio.open(root / city / "post.tif") as b,
            rasterio.open(root / city / "cm.tif") as m,
        ):
            pre, post, mask = a.read(), b.read(), m.read(1)
        masks[city] = mask
        cva_pix[city] = cva(pre, post)
        cos_pix[city] = np.zeros(mask.shape, np.float32)
        patch_pix[city] = np.zeros(mask.shape, np.float32)
    by_method = {k: v.set_index("window") for k, v in results.items()}
    for method, df in results.items():
        for _, r in df.iterrows():
            city = Path(r.source_before).parent.name
            w = json.loads(r.window)
            sl = (
                slice(w["row_off"], w["row_off"] + w["height"]),
                slice(w["col_off"], w["col_off"] + w["width"]),
            )
            if method == "cosine":
                cos_pix[city][sl] = r.change
                m = masks[city][sl]
                chip_rows.append(
                    {
                        "city": city,
                        "window": r.window,
                        "frac": float(m.mean()),
                        "cva": float(cva_pix[city][sl].mean()),
                        "cosine": float(r.change),
                    }
                )
            elif method == "patch":
                patch_pix[city][sl] = patch_tokens[(city, r.window)]
    del by_method
    sup_pix, sup_timing = ({}, {})
    if folds:
        sup_pix, sup_timing = supervised_maps(out, cities, folds, sup_epochs)
        for row in chip_rows:
            w = json.loads(row["window"])
            sl = (
                slice(w["row_off"], w["row_off"] + w["height"]),
                slice(w["col_off"], w["col_off"] + w["width"]),
            )
            row["supervised"] = float(sup_pix[row["city"]][sl].mean())
    frame = {k: [row[k] for row in chip_rows] for k in chip_rows[0]}
    key = {(c, w): i for i, (c, w) in enumerate(zip(frame["city"], frame["window"], strict=True))}
    for method in ("patch", "normalised"):
        vals = np.zeros(len(chip_rows))
        for _, r in results[method].iterrows():
            vals[key[(Path(r.source_before).parent.name, r.window)]] = r.change
        frame[method] = vals.tolist()
    labels = np.array(frame["frac"]) >= chip_frac
    city_arr = np.array(frame["city"])
    report = {
        "places": n_places,
        "chip_px": chip,
        "stats": stats,
        "chip_changed_if_frac_ge": chip_frac,
        "changed_chips": int(labels.sum()),
        "ingest_seconds": round(ingest_s, 1),
        "changes_seconds": {k: round(v, 3) for k, v in timing.items()},
        "seconds_per_1000_places": {k: round(v / n_places * 1000, 3) for k, v in timing.items()},
        "auc": {},
        "auc_mean_per_city": {},
        "pixel": {},
    }
    methods = ["cva", "cosine", "patch", "normalised"] + (["supervised"] if folds else [])
    if folds:
        report["supervised"] = {"folds": folds, "epochs": sup_epochs, **sup_timing}
    for method in methods:
        s = np.array(frame[method])
        report["auc"][method] = round(auc(s, labels), 3)
        per = [auc(s[city_arr == c], labels[city_arr == c]) for c in sorted(set(city_arr))]
        report["auc_mean_per_city"][method] = round(float(np.nanmean(per)), 3)
    # paired bootstrap over chips (seeded): AUC(method) - AUC(cva), 95 % interval
    rng = np.random.default_rng(0)
    cva_s = np.array(frame["cva"])
    report["auc_minus_cva_95ci"] = {}
    for method in ("cosine", "patch") + (("supervised",) if folds else ()):
        s = np.array(frame[method])
        diffs = []
        for _ in range(1000):
            idx = rng.integers(0, len(s), len(s))
            diffs.append(auc(s[idx], labels[idx]) - auc(cva_s[idx], labels[idx]))
        report["auc_minus_cva_95ci"][method] = [
            round(float(np.percentile(diffs, q)), 3) for q in (2.5, 97.5)
        ]
    pix_sets = [("cva", cva_pix), ("cosine", cos_pix), ("patch", patch_pix)]
    if folds:
        pix_sets.append(("supervised", sup_pix))
    for name, pix in pix_sets:
        r = pixel_scores_loco(pix, masks)
        report["pixel"][name] = {
            "f1": round(r["f1"], 3),
            "iou": round(r["iou"], 3),
            "f1_per_city": r["f1_per_city"],
        }
    return report


def _patch_distance_maps(store_path: Path, df, chip: int) -> dict:
    """Per chip ``[chip, chip]`` map of the patch-token cosine distance (each 8 px patch)."""
    import clay_search

    store = clay_search.connect(store_path)
    ids = store.attrs.column("chip_id").to_pylist()
    row_of = {c: i for i, c in enumerate(ids)}
    rb = [row_of[c] for c in df.chip_id_before]
    ra = [row_of[c] for c in df.chip_id_after]
    tb = store.take_column("patch_embeddings", np.array(rb))
    ta = store.take_column("patch_embeddings", np.array(ra))
    d = store.info.patch_dim
    g = chip // 8
    b = tb.flatten().to_numpy().reshape(len(rb), g * g, -1)
    a = ta.flatten().to_numpy().reshape(len(ra), g * g, -1)
    del d
    b = b / np.linalg.norm(b, axis=2, keepdims=True)
    a = a / np.linalg.norm(a, axis=2, keepdims=True)
    dist = 1.0 - np.sum(a * b, axis=2)
    out = {}
    for i, (_, r) in enumerate(df.iterrows()):
        m = dist[i].reshape(g, g)
        out[(Path(r.source_before).parent.name, r.window)] = np.kron(m, np.ones((8, 8)))
    return out


def _rgb(path: str, window: dict, pad: int = 0) -> np.ndarray:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        w = Window(
            window["col_off"] - pad,
            window["row_off"] - pad,
            window["width"] + 2 * pad,
            window["height"] + 2 * pad,
        )
        x = src.read([1, 2, 3], window=w, boundless=True).astype(np.float32)
    return np.clip(np.transpose(x, (1, 2, 0)) / 255.0 * 1.3, 0, 1)


def naip(out: Path, chip: int, top: int) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import clay_search
    from clay_search.ingest import run

    src = DATA / "opengeos" / "naip"
    store_path = out / "naip_store"
    t0 = time.perf_counter()
    if not store_path.exists():
        run([str(p) for p in sorted(src.glob("*.tif"))], store_path, chip_size=chip, workers=0)
    ingest_s = time.perf_counter() - t0
    store = clay_search.connect(store_path)
    before, after = ("2009-01-01", "2012-12-31"), ("2018-01-01", "2020-12-31")
    report = {"chips": len(store), "ingest_seconds": round(ingest_s, 1), "methods": {}}
    for method in ("cosine", "normalised"):
        store = clay_search.connect(store_path)
        t = time.perf_counter()
        res = store.changes(before, after, method=method)
        sec = time.perf_counter() - t
        df = res.to_pandas()
        report["methods"][method] = {
            "places": len(df),
            "pairs_grid": res.meta["pairs_grid"],
            "pairs_overlap": res.meta["pairs_overlap"],
            "seconds": round(sec, 3),
            "seconds_per_1000_places": round(sec / max(len(df), 1) * 1000, 3),
            "top": df.head(top)[
                ["place_id", "window", "change", "datetime_before", "datetime_after"]
            ]
            .astype(str)
            .to_dict("records"),
        }
        fig, axes = plt.subplots(2, top, figsize=(2.0 * top, 4.4))
        for i, (_, r) in enumerate(df.head(top).iterrows()):
            w = json.loads(r.window)
            axes[0, i].imshow(_rgb(r.source_before, w))
            axes[1, i].imshow(_rgb(r.source_after, w))
            axes[0, i].set_title(f"#{i + 1} {r.change:.2f}", fontsize=8)
            axes[1, i].set_xlabel(f"{r.datetime_after:%Y-%m-%d}", fontsize=7)
            axes[0, i].set_xlabel(f"{r.datetime_before:%Y-%m-%d}", fontsize=7)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"NAIP top changes ({method}): top row before, bottom row after")
        fig.tight_layout()
        fig.savefig(out / f"naip_top_{method}.png", dpi=110)
        plt.close(fig)
        if method == "cosine":
            median_fig(df, out, top)
            tl = store.timeline(df.place_id.iloc[0]).to_pandas()
            fig, axes = plt.subplots(1, len(tl), figsize=(1.8 * len(tl), 2.4))
            for ax, (_, r) in zip(np.atleast_1d(axes), tl.iterrows(), strict=True):
                ax.imshow(_rgb(r.source, json.loads(r.window)))
                ax.set_title(f"{r.datetime:%Y-%m-%d}\nd={r.distance:.2f}", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
            fig.tight_layout()
            fig.savefig(out / "naip_timeline_top.png", dpi=110)
            plt.close(fig)
            report["timeline_top"] = [
                {
                    "date": f"{r.datetime:%Y-%m-%d}",
                    "distance": round(float(r.distance), 3),
                    "grid": r.place_id[:8],
                }
                for _, r in tl.iterrows()
            ]
    return report


def median_fig(df, out: Path, top: int) -> None:
    """The least-changed places too, for contrast."""
    import matplotlib.pyplot as plt

    tail = df.tail(top)
    fig, axes = plt.subplots(2, top, figsize=(2.0 * top, 4.4))
    for i, (_, r) in enumerate(tail.iterrows()):
        w = json.loads(r.window)
        axes[0, i].imshow(_rgb(r.source_before, w))
        axes[1, i].imshow(_rgb(r.source_after, w))
        axes[0, i].set_title(f"{r.change:.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("NAIP least changed (cosine)")
    fig.tight_layout()
    fig.savefig(out / "naip_least_cosine.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/clay_change_bench"))
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--chip", type=int, default=32, help="OSCD chip size (px)")
    ap.add_argument("--chip-frac", type=float, default=0.05)
    ap.add_argument(
        "--stats",
        default="source",
        help="ingest normalisation of OSCD: source (per file) or sensor",
    )
    ap.add_argument("--folds", type=int, default=5, help="supervised head: city folds (0: off)")
    ap.add_argument("--sup-epochs", type=int, default=20, help="supervised head: epochs")
    ap.add_argument("--naip-chip", type=int, default=64)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--only", choices=["oscd", "naip"], default=None)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    global DATA
    DATA = args.data or DATA
    report = {}
    if args.only in (None, "oscd"):
        report["oscd"] = oscd(
            args.out, args.chip, args.chip_frac, args.stats, args.folds, args.sup_epochs
        )
        print(json.dumps(report["oscd"], indent=1))
    if args.only in (None, "naip"):
        report["naip"] = naip(args.out, args.naip_chip, args.top)
        print(json.dumps(report["naip"], indent=1, default=str))
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
