"""Quality score (recon_error): what it finds and what it costs at ingest.

1. Finding bad chips: every EuroSAT MS chip of ``../shared/data/eurosat_ms`` plus corrupted
   copies of a seeded quarter of them (three kinds: ``cloud``, a bright textured blob over most
   of the chip; ``haze``, a thin uniform brightening of 35 %; ``stripes``, every other row
   saturated, a broken read) are ingested with the shipped weights; the ROC AUC of recon_error
   for telling each kind from the clean chips is reported, with the clean chips' score per
   class and the 12 worst clean chips (thumbnails written to
   ``docs/screenshots/quality_worst.png``).
2. Cost: the same files ingested with ``--quality-score`` and ``--no-quality-score`` in the
   same process (fp32, one torch thread, three alternating repeats, the best of each): ratio
   of the whole run's wall time and of its embedding time.

    .venv/bin/python bench/quality_score.py [--data ../shared/data] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
KINDS = ("cloud", "haze", "stripes")


def corrupt(px: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A corrupted copy of raw L1C pixels ``[C, H, W]``."""
    px = px.astype(np.float32)
    _c, h, w = px.shape
    rng = np.random.default_rng(seed)
    if kind == "cloud":
        cy, cx = rng.uniform(0.3, 0.7, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        blob = np.exp(-(((yy - h * cy) / (h * 0.4)) ** 2 + ((xx - w * cx) / (w * 0.45)) ** 2))
        alpha = np.clip(blob * 1.4, 0, 1)
        cloud = rng.uniform(5000, 8000) * (1 + 0.05 * rng.standard_normal((h, w)))
        px = px * (1 - alpha) + cloud * alpha
    elif kind == "haze":
        px = px * 0.65 + 0.35 * 3000.0
    elif kind == "stripes":
        px[:, ::2] = 10000.0
    return np.clip(px, 0, 65535)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC: the chance a positive scores above a negative (ties count half)."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def build_sources(eurosat: Path, root: Path, seed: int = 0) -> dict[str, list[str]]:
    """Clean copies (as ``<Class>/``) and corrupted ones (as ``bad_<kind>/``); returns which
    source file names are corrupted, by kind."""
    files = sorted(eurosat.glob("*/*.tif"))
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(files), size=max(1, len(files) // 4), replace=False)
    bad: dict[str, list[str]] = {k: [] for k in KINDS}
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, root / f.parent.name / f.name)
    for j, i in enumerate(chosen):
        f = files[int(i)]
        kind = KINDS[j % len(KINDS)]
        with rasterio.open(f) as src:
            profile, desc, px = src.profile, src.descriptions, src.read()
        out = root / f"bad_{kind}" / f"{kind}_{f.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(corrupt(px, kind, seed + j).astype(profile["dtype"]))
            dst.descriptions = desc
        bad[kind].append(out.name)
    return bad


def thumbnails_png(df, path: Path, n: int = 12) -> None:
    """The ``n`` first rows' thumbnails side by side, with score captions."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = df.head(n)
    fig, axes = plt.subplots(1, len(rows), figsize=(1.6 * len(rows), 2.0), dpi=100)
    for ax, (_, r) in zip(np.atleast_1d(axes), rows.iterrows(), strict=False):
        ax.imshow(Image.open(io.BytesIO(r["thumbnail"])))
        ax.set_title(f"{r['label']}\n{r['recon_error']:.2f}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality_score.json")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    eurosat = (args.data / "eurosat_ms").resolve()
    if not eurosat.exists():
        print(f"{eurosat} is absent: nothing to measure", file=sys.stderr)
        return 2

    import torch

    import clay_search
    from clay_search.ingest import ingest
    from clay_search.model import Embedder

    torch.set_num_threads(1)
    embedder = Embedder.from_weights(precision="fp32")
    result: dict = {"machine": "2 vCPU AMD EPYC (AVX2), shared; fp32, 1 torch thread"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        bad = build_sources(eurosat, root)
        store = Path(tmp) / "store"
        rep = ingest([root], store, embedder=embedder, progress=False)
        assert rep.ok, rep.failed
        df = clay_search.connect(store).chips().to_pandas()
        name = df["source"].map(lambda s: Path(str(s)).name)
        kind = df["source"].map(
            lambda s: next((k for k in KINDS if f"/bad_{k}/" in str(s)), "clean")
        )
        clean = df[kind == "clean"]
        result["chips"] = {"clean": int(len(clean)), **{k: int((kind == k).sum()) for k in KINDS}}
        result["auc"] = {
            k: round(auc(df.loc[kind == k, "recon_error"], clean["recon_error"]), 4) for k in KINDS
        }
        bad_any = df[kind != "clean"]["recon_error"]
        result["auc"]["any"] = round(auc(bad_any, clean["recon_error"]), 4)
        result["clean_score"] = {
            "median": round(float(clean["recon_error"].median()), 4),
            "p95": round(float(clean["recon_error"].quantile(0.95)), 4),
        }
        result["bad_score_median"] = {
            k: round(float(df.loc[kind == k, "recon_error"].median()), 4) for k in KINDS
        }
        result["clean_by_class"] = {
            c: round(float(v), 4)
            for c, v in clean.groupby("label")["recon_error"].median().sort_values().items()
        }
        worst = df.sort_values("recon_error", ascending=False)
        result["top20_worst_corrupted"] = int((kind[worst.index[:20]] != "clean").sum())
        worst_clean = clean.sort_values("recon_error", ascending=False)
        result["worst_clean"] = [
            {"label": r["label"], "file": n, "recon_error": round(float(r["recon_error"]), 4)}
            for (_, r), n in zip(
                worst_clean.head(12).iterrows(), name[worst_clean.index[:12]], strict=True
            )
        ]
        thumbnails_png(worst_clean, REPO / "docs" / "screenshots" / "quality_worst.png")
        thumbnails_png(worst, REPO / "docs" / "screenshots" / "quality_worst_all.png")
        result["bad_files"] = {k: len(v) for k, v in bad.items()}

        # cost: the same sources, with and without the score, alternating
        times: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
        for r in range(args.repeats):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                out = Path(tmp) / f"cost_{mode}_{r}"
                t0 = time.perf_counter()
                rep = ingest(
                    [root], out, embedder=embedder, progress=False, quality_score=mode == "on"
                )
                times[mode].append((time.perf_counter() - t0, rep.embed_seconds))
                shutil.rmtree(out)
        best = {m: (min(t[0] for t in v), min(t[1] for t in v)) for m, v in times.items()}
        result["cost"] = {
            "chips": int(len(df)),
            "wall_s": {m: round(b[0], 2) for m, b in best.items()},
            "embed_s": {m: round(b[1], 2) for m, b in best.items()},
            "wall_ratio_on_off": round(best["on"][0] / best["off"][0], 3),
            "embed_ratio_on_off": round(best["on"][1] / best["off"][1], 3),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
