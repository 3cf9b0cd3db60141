"""Embedding quality on held-out chips, through the path users take (``clay-search eval``).

EuroSAT RGB and MS are ingested into a store with the CLI's defaults, then searched: kNN
precision@k of held-out chips against the gallery (train split) and a simulated labelling session
(3 positives, rounds of labelled results, logistic refine), against band statistics in the same
loop (``clay_search.quality``). ``direct=True`` adds the direct evaluation (vectors computed here,
each dataset normalised by its own statistics, with random-weight and pooling baselines);
BigEarthNet (multi-label) is evaluated directly only.

The options are the fields of :class:`EvalParams` (defined once); the ``clay-search eval``
command and the signature of :func:`evaluate` are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from clay_search.errors import QueryError
from clay_search.optionset import OptionSet, derive, opt, positive

__all__ = ["ALL_DATASETS", "STORE_DATASETS", "EvalParams", "evaluate", "report_markdown"]

STORE_DATASETS = ("eurosat_rgb", "eurosat_ms")
ALL_DATASETS = ("eurosat_rgb", "eurosat_ms", "bigearthnet")


def _datasets(value: Any) -> tuple[str, ...]:
    if not value:
        return ALL_DATASETS
    names = [value] if isinstance(value, str) else list(value)
    unknown = [d for d in names if d not in ALL_DATASETS]
    if unknown:
        raise QueryError(f"unknown dataset {unknown[0]!r}; use {', '.join(ALL_DATASETS)}")
    return tuple(names)


@dataclass
class EvalParams(OptionSet):
    """Everything that shapes an evaluation (``clay-search eval`` / :func:`evaluate`)."""

    option_error: ClassVar[type[Exception]] = QueryError
    option_kind: ClassVar[str] = "eval"

    weights: Path | None = opt(
        None,
        "Weights folder or Clay .ckpt (default: the bundled weights).",
        parse=lambda v: None if v is None else Path(v),
    )
    data: Path = opt(Path("../shared/data"), "Real data folder.", parse=Path)
    datasets: tuple[str, ...] | None = opt(
        None,
        "eurosat_rgb, eurosat_ms, bigearthnet (repeatable; default all).",
        flag="--dataset",
        parse=_datasets,
        cli_type=list[str],
    )
    max_gallery_per_class: int | None = opt(
        100,
        "Cap the gallery (train split) per class.",
        check=positive("--max-gallery-per-class", optional=True),
    )
    max_query_per_class: int | None = opt(
        30,
        "Cap the held-out queries per class.",
        check=positive("--max-query-per-class", optional=True),
    )
    k: int = opt(10, "k of kNN precision@k.", check=positive("--k"))
    rounds: int = opt(5, "Rounds of the simulated session.", check=positive("--rounds"))
    per_round: int = opt(20, "Results labelled per round.", check=positive("--per-round"))
    direct: bool = opt(False, "Add the direct evaluation (own statistics).", flag="--direct")
    threads: int | None = opt(
        None,
        "torch CPU threads during the evaluation (restored afterwards).",
        check=positive("--threads", optional=True),
    )


def evaluate(**options: Any) -> dict:
    """The through-store evaluation of ``datasets`` (and the direct one when asked, or for
    BigEarthNet), as a JSON-able report.

    Options (keyword-only):
    """
    from clay_search.model.threads import torch_threads

    p = EvalParams.from_options(**options)
    with torch_threads(p.threads):
        return _evaluate(p)


derive(evaluate, EvalParams, return_annotation=dict)


def _evaluate(p: EvalParams) -> dict:
    import time

    from clay_search.errors import SourceNotFoundError
    from clay_search.model.checkpoints import load_encoder
    from clay_search.quality import evaluate_direct, evaluate_through_store

    datasets = tuple(p.datasets or ALL_DATASETS)
    if not p.data.is_dir():
        raise SourceNotFoundError(f"data folder {p.data} does not exist; pass it with --data")
    t0 = time.monotonic()
    k, rounds, per_round = p.k, p.rounds, p.per_round
    report: dict = {
        "model_id": load_encoder(p.weights)[1].model_id,
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
                p.data / name,
                dataset=name,
                weights=p.weights,
                max_gallery_per_class=p.max_gallery_per_class,
                max_query_per_class=p.max_query_per_class,
                k=k,
                rounds=rounds,
                per_round=per_round,
            )
            report["through_store"][name] = res.to_dict()
    direct_sets = tuple(d for d in datasets if p.direct or d not in STORE_DATASETS)
    if direct_sets:
        report["direct"] = evaluate_direct(
            p.weights,
            p.data,
            datasets=direct_sets,
            max_gallery_per_class=p.max_gallery_per_class,
            max_query_per_class=p.max_query_per_class,
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
