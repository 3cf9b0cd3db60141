"""Session benchmark: a simulated analyst hunting features by example (issue 14).

The held-out EuroSAT RGB split (``ingest.datasets.split_of``: chips never seen in pretraining)
of ``../shared/data/eurosat_rgb`` is ingested with the CLI's defaults (bundled weights) into
one store. For every class, an analyst starts from 3 positives (seeded, the same for every
configuration), is shown 20 results a round for 5 rounds and labels them by truth; the hit
rate is the share of shown results that are of the class. The loop is
``clay_search.quality.simulate_session`` (the one simulated session, shared with
``clay-search eval``); each round is one ``clay_search.session.Session.run_round`` (what the
app's Refine runs), for each classifier (``logreg``, ``lightgbm``) and negative strategy:

- ``random``, ``kmeans``: the analyst labels every shown chip (hits positive, misses negative);
- ``hard``: the analyst only marks the hits, as in the app; the shown chips left unlabelled
  are the hard negatives of the next round. ``random (hits only)`` is its control: the same
  analyst with random background only.

Band statistics (per band mean, std, percentiles of the pixels, read back from the same files,
z-scored over the store: ``quality._bandstats``) go through the same loop, the same sessions,
in place of the embeddings. ``search+refine`` is the store's own loop (round 1
``Store.search``, then ``Store.refine``: ``quality._store_ranker``), for reference.

Targets (issue 14): hit rate >= 0.8 by the last round on the hard classes and >= +0.15 over
band statistics. The hard classes are fixed before the run: :data:`HARD_CLASSES`, EuroSAT's
commonly confused classes and the closest real examples of mines/ponds/solar farms here.

The labelled polygons (``solar_farms_india``, ``mining_polygons_tropics``) are checked against
the footprint of every georeferenced raster under ``../shared/data``: a session on them needs
imagery under them; where none covers them the report says so.

    .venv/bin/python bench/session.py --quick          # 3 classes x 60 chips, 3 rounds (smoke)
    .venv/bin/python bench/session.py --out bench/results/session.json   # full run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: ``../shared/data`` beside the checkout, or the folder $CLAY_SEARCH_SHARED_DATA names
DATA = Path(
    os.environ.get("CLAY_SEARCH_SHARED_DATA") or (REPO / ".." / "shared" / "data")
).resolve()
HARD_CLASSES = ("Highway", "HerbaceousVegetation", "Industrial", "PermanentCrop", "River")
#: (name, negatives strategy, the analyst labels misses too)
STRATEGIES = (
    ("random", "random", True),
    ("kmeans", "kmeans", True),
    ("hard", "hard", False),
    ("random (hits only)", "random", False),
)
POLYGONS = {
    "solar_farms_india": "solar_farms_india/solar_farms_india_2021.geojson",
    "mining_polygons_tropics": "mining_polygons_tropics/mining_polygons_demo.geojson",
}


class FeatureView:
    """A store whose chip vectors are replaced (the band statistics baseline): the session
    reads ``vectors``/``dim`` from it and everything else from the store."""

    def __init__(self, store: Any, vectors: np.ndarray) -> None:
        self._store = store
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.dim = int(vectors.shape[1])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __len__(self) -> int:
        return len(self._store)


class SessionAnalyst:
    """``rank(pos_rows, neg_rows)`` for ``simulate_session`` through one
    :class:`~clay_search.session.Session` kept across the rounds."""

    def __init__(
        self,
        store: Any,
        ids: list[str],
        *,
        classifier: str,
        negatives: str,
        label_misses: bool,
        per_round: int,
        seed: int = 0,
    ) -> None:
        from clay_search.session import Session

        self.store, self.ids, self.per_round = store, ids, per_round
        self.row = {c: r for r, c in enumerate(ids)}
        self.label_misses = label_misses
        self.session = Session.start(store, classifier=classifier, negatives=negatives, seed=seed)
        self.seen: set[int] = set()
        self.seconds = 0.0

    def __call__(self, pos: list[int], neg: list[int]) -> np.ndarray:
        from clay_search.session import NEGATIVE, POSITIVE

        s = self.session
        if not self.seen:
            self.seen.update(pos)  # the starting positives
        s.label([self.ids[r] for r in pos], POSITIVE, how="gallery")
        if self.label_misses:
            s.label([self.ids[r] for r in neg], NEGATIVE, how="gallery")
        t0 = time.perf_counter()
        rnd = s.run_round(self.store, k=self.per_round, cv_folds=0)
        self.seconds += time.perf_counter() - t0
        order = np.array([self.row[c] for c in rnd.chip_ids], dtype=np.int64)
        # what simulate_session will show: the first per_round rows not seen yet
        shown = [int(r) for r in order if int(r) not in self.seen][: self.per_round]
        self.seen.update(shown)
        s.shown = [self.ids[r] for r in shown]  # the hard strategy's unlabelled ones come from here
        return order


def ingest_heldout(
    tmp: Path, per_class: int | None, classes: list[str] | None, store_dir: Path | None = None
) -> tuple:
    """Ingest the held-out split of EuroSAT RGB into ``store_dir`` (default: in ``tmp``; an
    existing store of the same chips is resumed, i.e. nothing is re-embedded); returns
    (store, ids, labels, band stats, ingest report)."""
    import clay_search
    from clay_search.ingest import run as ingest_run
    from clay_search.quality import _bandstats, _link_tree, select_split

    _, heldout = select_split(
        DATA / "eurosat_rgb", max_gallery_per_class=0, max_query_per_class=per_class
    )
    if classes:
        heldout = {c: heldout[c] for c in classes}
    tree = tmp / "eurosat_rgb_heldout"
    _link_tree(heldout, tree)
    t0 = time.perf_counter()
    store_path = store_dir or tmp / "store"
    report = ingest_run([tree], store_path, progress=False)
    ingest_s = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"ingest failed: {report.failed[0].source}: {report.failed[0].error}")
    store = clay_search.connect(store_path)
    attrs = store.attrs
    ids = attrs.column("chip_id").to_pylist()
    labels = np.asarray(attrs.column("label").to_pylist())
    names = [Path(s).name for s in attrs.column("source").to_pylist()]
    stats = _bandstats([tree / lab / n for n, lab in zip(names, labels, strict=True)])
    stats /= np.linalg.norm(stats, axis=1, keepdims=True) + 1e-12  # like the stored vectors
    ing = {
        "seconds": round(ingest_s, 1),
        "chips": len(ids),
        "chips_written": report.chips_written,
        "chips_already_stored": report.chips_existing,
    }
    return store, ids, labels, stats, ing


def polygon_coverage() -> dict:
    """How many labelled polygons lie under any georeferenced raster in ../shared/data."""
    import shapely
    from rasterio.windows import Window

    from clay_search.geo import footprints
    from clay_search.ingest.raster import SourceReader
    from clay_search.ingest.sources import _raster_source

    fps, rasters = [], 0
    for p in sorted(DATA.rglob("*.tif")):
        try:
            reader = SourceReader(_raster_source(p))
            meta = reader.open()
            reader.close()
        except Exception:  # noqa: BLE001 - an unreadable file covers nothing; counted below
            continue
        if meta.crs is None:
            continue
        rasters += 1
        (fp,) = footprints(
            meta.crs, meta.transform, [Window(0, 0, meta.width, meta.height)],
            size=(meta.width, meta.height),
        )  # fmt: skip
        if fp.wkb is not None:
            fps.append(shapely.from_wkb(fp.wkb))
    cover = shapely.union_all(fps) if fps else None
    out: dict[str, Any] = {"georeferenced_rasters": rasters}
    for name, rel in POLYGONS.items():
        path = DATA / rel
        if not path.exists():
            out[name] = {"polygons": None, "note": f"{rel} is not in ../shared/data"}
            continue
        from clay_search.session import geojson_geometries

        geoms = geojson_geometries(path)
        hit = [g for g in geoms if cover is not None and g.intersects(cover)]
        out[name] = {"polygons": len(geoms), "under_imagery": len(hit)}
    return out


def run(args: argparse.Namespace) -> dict:
    from clay_search.quality import _store_ranker, simulate_session
    from clay_search.session import CLASSIFIERS

    t_all = time.perf_counter()
    classes = list(HARD_CLASSES[:3]) if args.quick else None
    with tempfile.TemporaryDirectory(prefix="clay-session-bench-") as tmp:
        store, ids, labels, stats, ing = ingest_heldout(
            Path(tmp), args.per_class, classes, args.store
        )
        feats = {"model": store, "band statistics": FeatureView(store, stats)}
        rng = np.random.default_rng(args.seed)
        starts = {}
        for cls in sorted(set(labels)):
            members = np.flatnonzero(labels == cls)
            if len(members) >= 4:
                starts[cls] = rng.choice(members, size=3, replace=False).tolist()
        rates: dict[str, dict[str, list[float]]] = {}
        seconds: dict[str, float] = {}
        for feat, view in feats.items():
            for clf in CLASSIFIERS:
                for name, negatives, misses in STRATEGIES:
                    key = f"{feat} | {clf} | {name}"
                    rates[key], seconds[key] = {}, 0.0
                    for cls, start in starts.items():
                        analyst = SessionAnalyst(
                            view, ids, classifier=clf, negatives=negatives,
                            label_misses=misses, per_round=args.per_round, seed=args.seed,
                        )  # fmt: skip
                        rates[key][cls] = simulate_session(
                            analyst, labels, cls, start=start,
                            rounds=args.rounds, per_round=args.per_round,
                        )  # fmt: skip
                        seconds[key] += analyst.seconds
                    print(key, _summary(rates[key], args.rounds), flush=True)
        key = "model | search+refine | random"
        t0 = time.perf_counter()
        rates[key] = {
            cls: simulate_session(
                _store_ranker(store, ids),
                labels,
                cls,
                start=start,
                rounds=args.rounds,
                per_round=args.per_round,
            )
            for cls, start in starts.items()
        }
        seconds[key] = time.perf_counter() - t0
        print(key, _summary(rates[key], args.rounds), flush=True)
    report = {
        "data": "eurosat_rgb held-out split (sha1 bucket < 30 %), ingested with CLI defaults",
        "quick": bool(args.quick),
        "ingest": ing,
        "rounds": args.rounds,
        "per_round": args.per_round,
        "start_positives": 3,
        "hard_classes": [c for c in HARD_CLASSES if c in starts],
        "hit_rate": rates,
        "session_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "targets": targets(rates, args.rounds),
        "polygons": polygon_coverage(),
    }
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    return report


def _mean_rounds(per_class: dict[str, list[float]], rounds: int, classes=None) -> list[float]:
    """Mean over classes of each round's hit rate (classes whose session ran that round)."""
    use = [c for c in per_class if classes is None or c in classes]
    return [
        round(float(np.mean([per_class[c][i] for c in use if len(per_class[c]) > i])), 4)
        for i in range(rounds)
        if any(len(per_class[c]) > i for c in use)
    ]


def _summary(per_class: dict[str, list[float]], rounds: int) -> str:
    return " ".join(f"{v:.2f}" for v in _mean_rounds(per_class, rounds))


def targets(rates: dict[str, dict[str, list[float]]], rounds: int) -> dict:
    """Per configuration: last-round hit rate on the hard classes, the band statistics' with the
    same classifier and strategy, and whether each target is met."""
    out = {}
    for key, per_class in rates.items():
        feat, rest = key.split(" | ", 1)
        if feat != "model":
            continue
        hard = [c for c in HARD_CLASSES if c in per_class]
        mine = _mean_rounds(per_class, rounds, hard)
        base_key = f"band statistics | {rest}"
        base = _mean_rounds(rates[base_key], rounds, hard) if base_key in rates else None
        last = mine[-1] if mine else None
        entry = {"hard_last_round": last, "target_0.8": bool(last is not None and last >= 0.8)}
        if base:
            entry["band_statistics_last_round"] = base[-1]
            entry["gain"] = round(last - base[-1], 4) if last is not None else None
            entry["target_+0.15"] = bool(last is not None and last - base[-1] >= 0.15)
        out[rest] = entry
    return out


def markdown(report: dict) -> str:
    """The result tables for docs/benchmarks.md."""
    rounds = report["rounds"]
    hard = report["hard_classes"]
    lines = [
        "| features | classifier | negatives | all classes, by round | hard classes, by round |",
        "|---|---|---|---|---|",
    ]
    for key, per_class in report["hit_rate"].items():
        feat, clf, neg = key.split(" | ")
        a = " / ".join(f"{v:.2f}" for v in _mean_rounds(per_class, rounds))
        h = " / ".join(f"{v:.2f}" for v in _mean_rounds(per_class, rounds, hard))
        lines.append(f"| {feat} | {clf} | {neg} | {a} | {h} |")
    lines += [
        "",
        "| classifier, negatives | hard, last round | band stats, last round | gain | >= 0.8 "
        "| >= +0.15 |",
        "|---|---|---|---|---|---|",
    ]
    for rest, t in report["targets"].items():
        base = t.get("band_statistics_last_round")
        gain = t.get("gain")
        lines.append(
            f"| {rest.replace(' | ', ', ')} | {t['hard_last_round']:.2f} | "
            f"{'-' if base is None else f'{base:.2f}'} | "
            f"{'-' if gain is None else f'{gain:+.2f}'} | "
            f"{'met' if t['target_0.8'] else 'missed'} | "
            f"{'-' if 'target_+0.15' not in t else ('met' if t['target_+0.15'] else 'missed')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 hard classes, 60 chips a class, 3 rounds"
    )
    ap.add_argument("--per-class", type=int, default=None, help="held-out chips per class")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (5; --quick: 3)")
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument(
        "--store", type=Path, default=None, help="keep the store here (a rerun reuses it)"
    )
    args = ap.parse_args()
    if args.per_class is None:
        args.per_class = 60 if args.quick else 120
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if not (DATA / "eurosat_rgb").is_dir():
        raise SystemExit(f"{DATA / 'eurosat_rgb'} is missing: the benchmark needs ../shared/data")
    report = run(args)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(markdown(report))
    print(json.dumps({"targets": report["targets"], "polygons": report["polygons"]}, indent=1))
    print(f"wall {report['wall_s']} s")


if __name__ == "__main__":
    main()
