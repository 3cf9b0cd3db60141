"""``clay-search eval``: embedding quality of a model against baselines, on held-out chips.

For EuroSAT RGB and MS: kNN precision@10 of held-out queries against the training split
(cosine on the raw features, and after z-scoring with gallery statistics) and a linear-probe
accuracy. For BigEarthNet (benv1 and benv2 labels apart): leave-one-out multi-label
precision@5. Baselines in the same run: per-band statistics, and the same architecture with
random weights (seed 0).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from clay_search.cli.options import VerboseOpt, WeightsOpt, handle_errors

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


def run_evaluation(
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
    """Evaluate ``weights`` (None: the bundled ones) and the baselines on ``data``."""
    import torch

    from clay_search.errors import SourceNotFoundError
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
            raise typer.BadParameter(f"unknown dataset {name!r}")
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


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the CLI."""

    @app.command("eval")
    @handle_errors
    def eval_cmd(
        weights: WeightsOpt = None,
        data: Annotated[Path, typer.Option("--data", help="Real data folder.")] = Path(
            "../shared/data"
        ),
        out: Annotated[
            Path | None, typer.Option("--out", help="Write the JSON report here.")
        ] = None,
        dataset: Annotated[
            list[str] | None,
            typer.Option(help="eurosat_rgb, eurosat_ms, bigearthnet (repeatable; default all)."),
        ] = None,
        max_gallery_per_class: Annotated[
            int | None, typer.Option(help="Cap the gallery (train split) per class.")
        ] = None,
        max_query_per_class: Annotated[
            int | None, typer.Option(help="Cap the held-out queries per class.")
        ] = None,
        k: Annotated[int, typer.Option(help="k of kNN precision@k.")] = 10,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """kNN precision@k, linear probe and multi-label precision vs. baselines."""
        if threads:
            import torch

            torch.set_num_threads(threads)
        report = run_evaluation(
            weights,
            data,
            datasets=tuple(dataset) if dataset else ("eurosat_rgb", "eurosat_ms", "bigearthnet"),
            max_gallery_per_class=max_gallery_per_class,
            max_query_per_class=max_query_per_class,
            k=k,
        )
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"model {report['model_id']} ({report['wall_s']} s)\n")
        typer.echo(report_markdown(report))
