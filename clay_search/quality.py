"""Embedding quality measured on the path users take: ingest -> store -> search -> score.

:func:`evaluate_through_store` copies nothing: it links a labelled subset of a chip folder
(``<root>/<Class>/*.tif|jpg``, e.g. EuroSAT) into a temporary labelled folder, ingests it with the
CLI's defaults (the same normaliser decision, chip size, pooling and precision a user gets), then
asks the store: each held-out chip is a positive example for ``Store.search`` and its ``k`` nearest
*gallery* chips are scored (precision@k); a simulated labelling session starts from 3 positives
of a class and runs ``rounds`` rounds of ``Store.refine`` (logistic regression), showing
``per_round`` new chips a round, labelled by truth; the hit rate is the share of shown chips
that are of the class. The band statistics baseline goes through the same loop on per-band
statistics of the stored chips' pixels, read back from the same files by ingest's own reader
(``ingest.imagery.read_chip``: the sensor, bands and pixels of the stored chip).

The split is the one training uses (``ingest.datasets.split_of``): held-out = sha1 bucket of
the file stem below 30 %, so held-out chips were never seen in pretraining.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clay_search.errors import SourceNotFoundError

CHIP_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")


@dataclass
class StoreEvaluation:
    """The result of one :func:`evaluate_through_store` run (fractions in 0..1)."""

    dataset: str
    n_gallery: int
    n_query: int
    k: int
    knn_precision: dict[str, float]  # features -> precision@k of held-out queries
    session_hit_rate: dict[str, list[float]]  # features -> hit rate per round (mean of classes)
    session_hit_rate_by_class: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    ingest: dict = field(default_factory=dict)  # what ingest decided (normaliser, model id, ...)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {
            "dataset": self.dataset,
            "n_gallery": self.n_gallery,
            "n_query": self.n_query,
            "k": self.k,
            "knn_precision": self.knn_precision,
            "session_hit_rate": self.session_hit_rate,
            "session_hit_rate_by_class": self.session_hit_rate_by_class,
            "ingest": self.ingest,
        }


def _labelled_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise SourceNotFoundError(f"{root} is not a folder of class subfolders (<Class>/*.tif)")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in CHIP_SUFFIXES)
        if files:
            out[d.name] = files
    if len(out) < 2:
        raise SourceNotFoundError(
            f"{root} needs at least two class subfolders of chips (<Class>/*.tif|jpg)"
        )
    return out


def select_split(
    root: Path,
    *,
    max_gallery_per_class: int | None,
    max_query_per_class: int | None,
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(gallery, held-out) files per class, by the training split, capped per class."""
    from clay_search.ingest.datasets import select_files

    gallery, queries = {}, {}
    for cls, files in _labelled_files(root).items():
        gallery[cls] = select_files(list(files), "train", max_gallery_per_class)
        queries[cls] = select_files(list(files), "eval", max_query_per_class)
    return gallery, queries


def _link_tree(files: dict[str, list[Path]], dest: Path) -> None:
    for cls, fs in files.items():
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for f in fs:
            os.symlink(f.resolve(), dest / cls / f.name)


def _bandstats(paths: Sequence[Path], embedder, options: dict | None = None) -> np.ndarray:
    """Band statistics of each chip file as ingest reads it (the one reader:
    :func:`clay_search.ingest.imagery.read_chip`: same sensor, bands and pixels as the stored
    chip), z-scored over the store."""
    from clay_search.ingest.imagery import read_chip
    from clay_search.model.evaluate import band_stat_features

    opts = {k: v for k, v in (options or {}).items() if k in ("sensor", "bands", "stats")}
    feats = []
    for p in paths:
        _, raw, _, _ = read_chip(p, embedder, **opts)
        feats.append(band_stat_features(raw[None].astype(np.float32))[0])
    x = np.stack(feats).astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)  # z-score over the store (one feature scale)
    return x.astype(np.float32)


def _knn_from_store(store, query_ids, query_labels, is_gallery, k: int) -> float:
    """Mean precision@k: held-out chip as the positive of ``Store.search``, gallery hits only."""
    hits = []
    for cid, lab in zip(query_ids, query_labels, strict=True):
        want = k
        got: list[Any] = []
        while len(got) < k:
            res = store.search(positives=[cid], k=min(len(store) - 1, 4 * want)).to_arrow()
            got = [
                lbl
                for hid, lbl in zip(
                    res.column("chip_id").to_pylist(), res.column("label").to_pylist(), strict=True
                )
                if is_gallery[hid]
            ][:k]
            if 4 * want >= len(store) - 1:
                break
            want *= 4
        hits.append(np.mean([g == lab for g in got]) if got else 0.0)
    return float(np.mean(hits))


def _knn_from_vectors(x: np.ndarray, labels: np.ndarray, gal: np.ndarray, k: int) -> float:
    """The same protocol on an in-memory feature matrix (the band statistics baseline)."""
    from clay_search.model.evaluate import knn_precision_at_k

    q = ~gal
    return knn_precision_at_k(x[q], labels[q], x[gal], labels[gal], k=k)


def simulate_session(
    rank: Callable[[list[int], list[int]], np.ndarray],
    labels: np.ndarray,
    cls: str,
    *,
    start: Sequence[int],
    rounds: int = 5,
    per_round: int = 20,
) -> list[float]:
    """Hit rate per round of a labelling session for ``cls``.

    ``rank(pos_rows, neg_rows)`` returns row numbers best first; each round shows the first
    ``per_round`` rows not yet labelled, labels them by truth (class = positive, else negative).
    """
    pos = list(start)
    neg: list[int] = []
    seen = set(pos)
    rates = []
    for _ in range(rounds):
        shown = [int(r) for r in rank(pos, neg) if int(r) not in seen][:per_round]
        if not shown:
            break
        good = [r for r in shown if labels[r] == cls]
        rates.append(len(good) / len(shown))
        pos += good
        neg += [r for r in shown if labels[r] != cls]
        seen.update(shown)
    return rates


def _vector_ranker(
    x: np.ndarray, seed: int = 0, background: int = 10
) -> Callable[[list[int], list[int]], np.ndarray]:
    """The store's loop on a feature matrix: round 1 ranks by cosine to the mean of the
    normalised positives (``Store.search``), later rounds by a logistic regression on the labels
    plus ``background`` x positives random chips as negatives (``Store.refine``)."""
    from clay_search.refine import background_rows, fit_scorer, score_rows

    xn = (x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)).astype(np.float32)

    def rank(pos: list[int], neg: list[int]) -> np.ndarray:
        if not neg:
            q = xn[pos].mean(0)
            return np.argsort(-(xn @ q), kind="stable")
        labelled = np.array(sorted(set(pos) | set(neg)))
        bg = background_rows(len(xn), labelled, background * len(pos), seed=seed)
        model = fit_scorer(xn[pos], np.vstack([xn[neg], xn[bg]]), seed=seed)
        return np.argsort(-score_rows(model, xn), kind="stable")

    return rank


def _store_ranker(store, ids: list[str]) -> Callable[[list[int], list[int]], np.ndarray]:
    """Rows ranked by the store itself: ``Store.search`` in round 1, ``Store.refine`` after."""
    row = {cid: r for r, cid in enumerate(ids)}

    def rank(pos: list[int], neg: list[int]) -> np.ndarray:
        p = [ids[r] for r in pos]
        if not neg:
            res = store.search(positives=p, k=len(ids) - len(p))
        else:
            res = store.refine(p, [ids[r] for r in neg])
        return np.array([row[c] for c in res.chip_ids], dtype=np.int64)

    return rank


def evaluate_through_store(
    root: str | Path,
    *,
    dataset: str | None = None,
    weights: str | Path | None = None,
    max_gallery_per_class: int | None = 200,
    max_query_per_class: int | None = 50,
    k: int = 10,
    rounds: int = 5,
    per_round: int = 20,
    store_dir: str | Path | None = None,
    seed: int = 0,
    ingest_options: dict | None = None,
) -> StoreEvaluation:
    """Ingest a labelled chip folder with the CLI's defaults, search it, score it.

    ``store_dir`` keeps the store (default: a temporary folder, removed). ``ingest_options``
    passes extra ingest keywords (``sensor``, ``bands``...) as a user would on the command line.
    """
    import clay_search
    from clay_search.ingest import run as ingest_run

    root = Path(root)
    gallery, queries = select_split(
        root, max_gallery_per_class=max_gallery_per_class, max_query_per_class=max_query_per_class
    )
    gal_names = {f.name for fs in gallery.values() for f in fs}
    with tempfile.TemporaryDirectory(prefix="clay-eval-") as tmp:
        tree = Path(tmp) / (dataset or root.name)
        _link_tree({c: gallery[c] + queries[c] for c in gallery}, tree)
        store_path = Path(store_dir) if store_dir else Path(tmp) / "store"
        report = ingest_run([tree], store_path, weights=weights, **(ingest_options or {}))
        if report.failed:
            first = report.failed[0]
            raise SourceNotFoundError(
                f"ingest of the evaluation chips failed for {len(report.failed)} source(s), "
                f"first: {first.source}: {first.error}"
            )
        store = clay_search.connect(store_path, weights=weights)
        table = store.chips().to_arrow()
        ids = table.column("chip_id").to_pylist()
        labels = np.asarray(table.column("label").to_pylist())
        names = [Path(s).name for s in table.column("source").to_pylist()]
        links = {n: (tree / lab / n) for n, lab in zip(names, labels, strict=True)}
        is_gal = np.array([n in gal_names for n in names])
        by_id = dict(zip(ids, is_gal, strict=True))
        qids = [i for i, g in zip(ids, is_gal, strict=True) if not g]
        qlabels = [lab for lab, g in zip(labels, is_gal, strict=True) if not g]
        knn = {"model (store search)": _knn_from_store(store, qids, qlabels, by_id, k)}
        from clay_search.model.embedder import Embedder

        reader_embedder = Embedder.from_weights(weights, precision="fp32")
        stats = _bandstats([links[n] for n in names], reader_embedder, ingest_options)
        knn["band statistics"] = _knn_from_vectors(stats, labels, is_gal, k)

        # the labelling session over the whole store (as an analyst would see it)
        rankers = {
            "model (store search)": _store_ranker(store, ids),
            "band statistics": _vector_ranker(stats, seed),
        }
        rng = np.random.default_rng(seed)
        session: dict[str, dict[str, list[float]]] = {name: {} for name in rankers}
        for cls in sorted(set(labels)):
            members = np.flatnonzero(labels == cls)
            if len(members) < 4:
                continue
            start = rng.choice(members, size=3, replace=False).tolist()
            for name, ranker in rankers.items():
                session[name][cls] = simulate_session(
                    ranker, labels, cls, start=start, rounds=rounds, per_round=per_round
                )
        mean_rates = {
            name: [
                float(np.mean([r[i] for r in per.values() if len(r) > i]))
                for i in range(rounds)
                if any(len(r) > i for r in per.values())
            ]
            for name, per in session.items()
        }
        return StoreEvaluation(
            dataset=dataset or root.name,
            n_gallery=int(is_gal.sum()),
            n_query=int((~is_gal).sum()),
            k=k,
            knn_precision=knn,
            session_hit_rate=mean_rates,
            session_hit_rate_by_class=session,
            ingest={
                "model_id": store.model_id,
                "chips": len(ids),
                "normalisers": {
                    key.split(" | ", 1)[-1]: v.get("stats_source")
                    for key, v in report.normalisers.items()
                },
                "options": {
                    "weights": None if weights is None else str(weights),
                    **(ingest_options or {}),
                },
            },
        )


# -- the direct evaluation (vectors computed here, each dataset with its own statistics) ---------
FEATURE_ORDER = (
    "bandstats",
    "random:cls",
    "random:mean",
    "random:mean+std",
    "model:cls",
    "model:mean",
    "model:mean+std",
    "model:cls+mean",
    "model:shipped",
)


def _features(encoders: dict, chips, pixels: np.ndarray) -> dict[str, np.ndarray]:
    from clay_search.model.embedder import Embedder
    from clay_search.model.evaluate import band_stat_features, encoder_features

    feats = {"bandstats": band_stat_features(pixels)}
    for tag, enc in encoders.items():
        if isinstance(enc, Embedder):  # the chip vector as shipped (pooling + standardisation)
            feats[tag] = np.concatenate(
                [
                    enc.embed(
                        pixels[s : s + 256],
                        waves=chips.waves,
                        gsd=chips.gsd,
                        datetimes=None if chips.times is None else chips.times[s : s + 256],
                        lonlats=None if chips.lonlats is None else chips.lonlats[s : s + 256],
                    ).embedding
                    for s in range(0, len(pixels), 256)
                ]
            )
            continue
        out = encoder_features(
            enc,
            pixels,
            waves=chips.waves,
            gsd=chips.gsd,
            datetimes=chips.times,
            lonlats=chips.lonlats,
        )
        for name, f in out.items():
            if tag == "random" and name == "cls+mean":
                continue
            feats[f"{tag}:{name}"] = f
    return feats


def _eval_eurosat(encoders: dict, gallery, queries, *, k: int) -> dict:
    from clay_search.model.evaluate import knn_precision_at_k, linear_probe_accuracy, standardise

    fg = _features(encoders, gallery, gallery.normalised())
    fq = _features(encoders, queries, queries.normalised())
    rows = {}
    for name in FEATURE_ORDER:
        if name not in fg:
            continue
        g, q = fg[name], fq[name]
        gs, qs = standardise(g, q)
        rows[name] = {
            f"knn_p{k}": knn_precision_at_k(q, queries.labels, g, gallery.labels, k=k),
            f"knn_p{k}_zscore": knn_precision_at_k(qs, queries.labels, gs, gallery.labels, k=k),
            "linear_probe": linear_probe_accuracy(g, gallery.labels, q, queries.labels),
            "dim": int(g.shape[1]),
        }
    return {"n_gallery": len(gallery), "n_query": len(queries), "features": rows}


def _eval_multilabel(encoders: dict, chips, *, k: int) -> dict:
    from clay_search.model.evaluate import multilabel_precision_at_k, standardise

    feats = _features(encoders, chips, chips.normalised())
    rows = {}
    for name in FEATURE_ORDER:
        if name in feats:
            (fs,) = standardise(feats[name])
            rows[name] = {
                f"ml_p{k}": multilabel_precision_at_k(feats[name], chips.labels, k=k),
                f"ml_p{k}_zscore": multilabel_precision_at_k(fs, chips.labels, k=k),
            }
    return {"n": len(chips), "features": rows}


def evaluate_direct(
    weights: Path | None,
    data: Path,
    *,
    datasets: tuple[str, ...] = ("eurosat_rgb", "eurosat_ms", "bigearthnet"),
    max_gallery_per_class: int | None = None,
    max_query_per_class: int | None = None,
    k: int = 10,
    ml_k: int = 5,
    seed: int = 0,
) -> dict:
    """The direct evaluation: vectors computed here from each dataset normalised by its own
    statistics (not the ingest path), for ``weights`` (None: bundled) and the baselines."""
    import torch

    from clay_search.errors import QueryError, SourceNotFoundError
    from clay_search.ingest.datasets import eurosat_eval_sets, read_bigearthnet
    from clay_search.model.checkpoints import load_encoder
    from clay_search.model.clay import ClayEncoder

    if not Path(data).is_dir():
        raise SourceNotFoundError(f"data folder {data} does not exist; pass it with --data")
    t0 = time.monotonic()
    encoder, info = load_encoder(weights)
    torch.manual_seed(seed)
    random_encoder = ClayEncoder.from_config(info.config).eval()
    from clay_search.model.embedder import Embedder

    shipped = Embedder(encoder, info, precision="fp32")
    encoders = {"random": random_encoder, "model": encoder, "model:shipped": shipped}
    report: dict = {
        "model_id": info.model_id,
        "weights": info.path,
        "protocol": {
            "split": "held-out = sha1(file stem) bucket < 30% (ingest.datasets.split_of)",
            "knn": f"queries = held-out split, gallery = train split, cosine, precision@{k}",
            "linear_probe": "multinomial logistic regression (L-BFGS, L2 1e-3) on z-scored "
            "features, fit on the train split, accuracy on the held-out split",
            "multilabel": f"leave-one-out within the set, precision@{ml_k}, relevant = shares "
            "a label",
            "random_baseline": f"same architecture, torch.manual_seed({seed}) initialisation",
            "pooling": "cls = CLS token; mean = average of patch tokens; mean+std = average and "
            "standard deviation of patch tokens; cls+mean = both L2-normalised, concatenated; "
            f"shipped = the Embedder's chip vector for these weights (pooling {shipped.pooling}, "
            f"standardised with the shipped statistics: {shipped.standardised})",
            "bandstats_baseline": "per band mean, std, p5, p25, p50, p75, p95 of normalised pixels",
        },
        "datasets": {},
    }
    for name in datasets:
        if name in ("eurosat_rgb", "eurosat_ms"):
            kind = name.split("_")[1]
            gallery, queries = eurosat_eval_sets(
                data / name,
                kind=kind,
                max_gallery_per_class=max_gallery_per_class,
                max_query_per_class=max_query_per_class,
            )
            report["datasets"][name] = _eval_eurosat(encoders, gallery, queries, k=k)
        elif name == "bigearthnet":
            for version in ("benv1", "benv2"):
                chips = read_bigearthnet(data / "bigearthnet", labels_version=version)
                report["datasets"][f"bigearthnet_{version}"] = _eval_multilabel(
                    encoders, chips, k=ml_k
                )
        else:
            raise QueryError(
                f"unknown dataset {name!r}; use eurosat_rgb, eurosat_ms or bigearthnet"
            )
    report["wall_s"] = round(time.monotonic() - t0, 1)
    return report


def report_markdown(report: dict) -> str:
    """The evaluation tables as Markdown (the model card's table)."""
    lines = []
    for ds, res in report["datasets"].items():
        feats = res["features"]
        metrics = [m for m in next(iter(feats.values())) if m != "dim"]
        size = (
            f"{res['n_gallery']} gallery / {res['n_query']} held-out queries"
            if "n_gallery" in res
            else f"{res['n']} patches"
        )
        lines += [f"**{ds}** ({size})", "", "| features | " + " | ".join(metrics) + " |"]
        lines.append("|---" * (len(metrics) + 1) + "|")
        for fname, vals in feats.items():
            cells = " | ".join(f"{100 * vals[m]:.1f}" for m in metrics)
            lines.append(f"| {fname} | {cells} |")
        lines.append("")
    return "\n".join(lines)
