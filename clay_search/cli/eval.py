"""``clay-search eval``: embedding quality on held-out chips, through the path users take.

EuroSAT RGB and MS are ingested into a store with the CLI's defaults, then searched: kNN
precision@k of held-out chips against the gallery (train split) and a simulated labelling session
(3 positives, rounds of labelled results, logistic refine), against band statistics in the same
loop (``clay_search.quality``). ``--direct`` adds the direct evaluation (vectors computed here,
each dataset normalised by its own statistics, with random-weight and pooling baselines);
BigEarthNet (multi-label) is evaluated directly only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import VerboseOpt, WeightsOpt, handle_errors

STORE_DATASETS = ("eurosat_rgb", "eurosat_ms")
ALL_DATASETS = ("eurosat_rgb", "eurosat_ms", "bigearthnet")


def run_evaluation(
    weights: Path | None,
    data: Path,
    *,
    datasets: tuple[str, ...] = ALL_DATASETS,
    max_gallery_per_class: int | None = 100,
    max_query_per_class: int | None = 30,
    k: int = 10,
    rounds: int = 5,
    per_round: int = 20,
    direct: bool = False,
) -> dict:
    """The through-store evaluation of ``datasets`` (and the direct one when asked or needed)."""
    import time

    from clay_search.errors import QueryError, SourceNotFoundError
    from clay_search.quality import evaluate_direct, evaluate_through_store

    unknown = [d for d in datasets if d not in ALL_DATASETS]
    if unknown:
        raise QueryError(f"unknown dataset {unknown[0]!r}; use {', '.join(ALL_DATASETS)}")
    if not Path(data).is_dir():
        raise SourceNotFoundError(f"data folder {data} does not exist; pass it with --data")
    from clay_search.model.checkpoints import load_encoder

    t0 = time.monotonic()
    report: dict = {
        "model_id": load_encoder(weights)[1].model_id,
        "protocol": {
            "through_store": "labelled chips ingested with the CLI's defaults into a fresh store; "
            f"held-out chip = positive of Store.search, precision@{k} over gallery (train split) "
            f"hits; session: 3 random positives per class, {rounds} rounds of {per_round} new "
            "results labelled by truth, Store-style logistic refine from round 2; band statistics "
            "(per-band mean, std, percentiles of the stored chips' pixels, z-scored) in the same "
            "loop",
            "split": "held-out = sha1(file stem) bucket < 30% (ingest.datasets.split_of)",
        },
        "through_store": {},
    }
    for name in datasets:
        if name in STORE_DATASETS:
            res = evaluate_through_store(
                Path(data) / name,
                dataset=name,
                weights=weights,
                max_gallery_per_class=max_gallery_per_class,
                max_query_per_class=max_query_per_class,
                k=k,
                rounds=rounds,
                per_round=per_round,
            )
            report["through_store"][name] = res.to_dict()
    direct_sets = tuple(d for d in datasets if direct or d not in STORE_DATASETS)
    if direct_sets:
        report["direct"] = evaluate_direct(
            weights,
            Path(data),
            datasets=direct_sets,
            max_gallery_per_class=max_gallery_per_class,
            max_query_per_class=max_query_per_class,
            k=k,
        )
    report["wall_s"] = round(time.monotonic() - t0, 1)
    return report


def report_markdown(report: dict) -> str:
    """The evaluation tables as Markdown (the model card's tables)."""
    from clay_search.quality import report_markdown as direct_markdown

    lines = []
    for ds, res in report.get("through_store", {}).items():
        rounds = max((len(v) for v in res["session_hit_rate"].values()), default=0)
        lines += [
            f"**{ds}, through ingest + search** ({res['n_gallery']} gallery / "
            f"{res['n_query']} held-out chips in one store)",
            "",
            f"| features | kNN P@{res['k']} | "
            + " | ".join(f"hit rate r{i + 1}" for i in range(rounds))
            + " |",
            "|---" * (rounds + 2) + "|",
        ]
        for feat, p in res["knn_precision"].items():
            rates = res["session_hit_rate"].get(feat, [])
            cells = " | ".join(f"{100 * r:.1f}" for r in rates)
            lines.append(f"| {feat} | {100 * p:.1f} | {cells} |")
        lines.append("")
    if "direct" in report:
        lines += [
            "Direct evaluation (vectors computed here, each dataset normalised by its own "
            "statistics: not the path a store takes)",
            "",
        ]
        lines.append(direct_markdown(report["direct"]))
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
        ] = 100,
        max_query_per_class: Annotated[
            int | None, typer.Option(help="Cap the held-out queries per class.")
        ] = 30,
        k: Annotated[int, typer.Option(help="k of kNN precision@k.")] = 10,
        rounds: Annotated[int, typer.Option(help="Rounds of the simulated session.")] = 5,
        per_round: Annotated[int, typer.Option(help="Results labelled per round.")] = 20,
        direct: Annotated[
            bool, typer.Option("--direct", help="Add the direct evaluation (own statistics).")
        ] = False,
        threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
        verbose: VerboseOpt = False,
    ) -> None:
        """kNN precision@k and a simulated labelling session through ingest + search."""
        import torch

        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            report = run_evaluation(
                weights,
                data,
                datasets=tuple(dataset) if dataset else ALL_DATASETS,
                max_gallery_per_class=max_gallery_per_class,
                max_query_per_class=max_query_per_class,
                k=k,
                rounds=rounds,
                per_round=per_round,
                direct=direct,
            )
        finally:
            torch.set_num_threads(before)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
        typer.echo(f"model {report['model_id']} ({report['wall_s']} s)\n")
        typer.echo(report_markdown(report))
