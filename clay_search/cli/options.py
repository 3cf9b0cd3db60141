"""Options shared by several subcommands, and the one-line error handling of the CLI.

Each option is defined once here (name, type, default, help) and used by every subcommand that
takes it, as rasterio's ``rio/options.py`` does. A group of options that travels together is
added to a command by one decorator (:func:`option_group`): the filter options
(:func:`filter_options`, one :class:`FilterOptions` that builds one
:class:`~clay_search.filters.Filters`) and the training options of ``finetune``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, overload

import typer

from clay_search.errors import ClaySearchError, QueryError

if TYPE_CHECKING:
    from clay_search.optionset import OptionSet

StoreOpt = Annotated[Path, typer.Option("--store", "-s", help="Store directory (LanceDB + index).")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Weights folder or Clay .ckpt (default: the bundled weights)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks on errors.")]

# -- filters (one Filters object; see clay_search.filters) -------------------------------------
BboxOpt = Annotated[str | None, typer.Option(help="minx,miny,maxx,maxy in degrees (lon/lat).")]
GeometryOpt = Annotated[
    Path | None, typer.Option(help="GeoJSON/WKT file: keep chips intersecting it.")
]
StartOpt = Annotated[str | None, typer.Option(help="Earliest date (ISO, inclusive).")]
EndOpt = Annotated[str | None, typer.Option(help="Latest date (ISO, inclusive).")]
SensorOpt = Annotated[
    list[str] | None, typer.Option("--sensor", help="Keep chips of this sensor (repeatable).")
]
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", help="Keep chips with this label (repeatable).")
]
UndatedOpt = Annotated[
    bool,
    typer.Option(
        "--undated/--no-undated", help="With --start/--end, also keep chips without a date."
    ),
]
PredLabelOpt = Annotated[
    list[str] | None,
    typer.Option("--pred-label", help="Keep chips predicted as this label (repeatable)."),
]
MinPredScoreOpt = Annotated[
    float | None, typer.Option("--min-pred-score", help="Keep chips with pred_score >= this.")
]
MaxReconErrorOpt = Annotated[
    float | None,
    typer.Option(
        "--max-recon-error",
        help="Drop chips whose quality score (recon_error) is above this; unscored chips stay.",
    ),
]
VersionOpt = Annotated[int | None, typer.Option(help="Query this table version.")]
OutOpt = Annotated[
    Path | None, typer.Option(help="Write the chips (.geojson, .json, .parquet, .csv).")
]

#: Output suffixes ``write_results`` knows.
OUT_SUFFIXES = (".geojson", ".json", ".parquet", ".geoparquet", ".csv")


@overload
def parse_floats(text: str, n: int, name: str) -> list[float]: ...
@overload
def parse_floats(text: None, n: int, name: str) -> None: ...
def parse_floats(text: str | None, n: int, name: str) -> list[float] | None:
    """``n`` comma-separated numbers from an option's text (None stays None)."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError as e:
        raise QueryError(f"{name} must be {n} comma-separated numbers; got {text!r}") from e
    if len(vals) != n:
        raise QueryError(f"{name} must be {n} comma-separated numbers; got {text!r}")
    return vals


def filters_from_options(
    *,
    bbox: str | None = None,
    geometry: Path | None = None,
    start: str | None = None,
    end: str | None = None,
    sensor: list[str] | None = None,
    label: list[str] | None = None,
    undated: bool = False,
    pred_label: list[str] | None = None,
    min_pred_score: float | None = None,
    max_recon_error: float | None = None,
):
    """The :class:`~clay_search.filters.Filters` the filter options describe."""
    from clay_search.filters import Filters

    geom_text = None
    if geometry is not None:
        try:
            geom_text = geometry.read_text()
        except OSError as e:
            raise QueryError(f"cannot read --geometry {geometry}: {e}") from e
    # Filters.of takes the keywords' input types (text dates, lists); the fields hold them parsed
    return Filters.of(
        None,
        bbox=parse_floats(bbox, 4, "--bbox"),
        geometry=geom_text,
        start=start,
        end=end,
        sensor=sensor or None,
        label=label or None,
        undated=undated,
        pred_label=pred_label or None,
        min_pred_score=min_pred_score,
        max_recon_error=max_recon_error,
    )


#: (name, annotation, default) of the filter options, in --help order
FILTER_OPTIONS: tuple[tuple[str, object, object], ...] = (
    ("sensor", SensorOpt, None),
    ("label", LabelOpt, None),
    ("bbox", BboxOpt, None),
    ("geometry", GeometryOpt, None),
    ("start", StartOpt, None),
    ("end", EndOpt, None),
    ("undated", UndatedOpt, False),
    ("pred_label", PredLabelOpt, None),
    ("min_pred_score", MinPredScoreOpt, None),
    ("max_recon_error", MaxReconErrorOpt, None),
)


@dataclass(frozen=True)
class FilterOptions:
    """The filter options a command was given (added by :func:`filter_options`)."""

    sensor: list[str] | None = None
    label: list[str] | None = None
    bbox: str | None = None
    geometry: Path | None = None
    start: str | None = None
    end: str | None = None
    undated: bool = False
    pred_label: list[str] | None = None
    min_pred_score: float | None = None
    max_recon_error: float | None = None

    def filters(self):
        """The :class:`~clay_search.filters.Filters` they describe (reads ``--geometry``)."""
        return filters_from_options(**asdict(self))


#: the default of a command's ``where: FilterOptions`` parameter (typer fills it in)
NO_FILTERS = FilterOptions()


def option_group(
    param: str,
    options: Sequence[tuple[str, object, object]],
    build: Callable[..., Any],
    **defaults: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that gives a command the ``options`` ((name, annotation, default), each
    defined once) in place of its parameter ``param``, which receives ``build(**values)``.

    ``defaults`` override the options' defaults for this command (e.g. ``epochs=20``). The
    options take the place (and the kind) of ``param`` in the command's signature, so ``--help``
    lists them there.
    """
    names = [name for name, _, _ in options]
    unknown = set(defaults) - set(names)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        own = list(sig.parameters.values())
        at = next(i for i, p in enumerate(own) if p.name == param)
        group = [
            inspect.Parameter(name, own[at].kind, default=defaults.get(name, d), annotation=a)
            for name, a, d in options
        ]
        params = [*own[:at], *group, *own[at + 1 :]]
        given = {p.name: p.default for p in group}  # what a call without the option gets

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = build(**{name: kwargs.pop(name, given[name]) for name in names})
            return func(*args, **{param: value}, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def filter_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the filter options ``names`` (in this order; all by default) in place of
    its parameter ``where: FilterOptions = NO_FILTERS``; ``where.filters()`` is the one
    :class:`~clay_search.filters.Filters` they describe."""
    known = {o[0]: o for o in FILTER_OPTIONS}
    missing = set(names) - set(known)
    if missing:
        raise TypeError(f"unknown filter options {sorted(missing)}")
    chosen = [known[name] for name in names] if names else list(FILTER_OPTIONS)
    return option_group("where", chosen, FilterOptions)


def check_out(out: Path | None) -> None:
    """Refuse an output path of an unknown type before any work is done."""
    if out is not None and out.suffix.lower() not in OUT_SUFFIXES:
        raise QueryError(
            f"unknown output type {out.suffix or '(none)'!r} for {out}; "
            f"use one of {', '.join(OUT_SUFFIXES)}"
        )
    if out is not None and not out.parent.exists():
        raise QueryError(f"folder {out.parent} for --out does not exist; create it first")


def write_results(results, out: Path, *, merge: bool = False) -> Path:
    """Write results by file extension: .geojson/.json, .parquet/.geoparquet, .csv."""
    check_out(out)
    suffix = out.suffix.lower()
    if suffix in {".geojson", ".json"}:
        return results.to_geojson(out, merge=merge)
    if suffix in {".parquet", ".geoparquet"}:
        return results.to_geoparquet(out, merge=merge)
    df = results.to_pandas().drop(columns=["geometry", "thumbnail"], errors="ignore")
    df.to_csv(out, index=False)
    return out


def cell(value) -> str:
    """A table cell: empty for missing values (None, NaN, NaT), else ``str(value)``."""
    import pandas as pd

    try:
        if value is None or bool(pd.isna(value)):
            return ""
    except (TypeError, ValueError):  # arrays and the like: not a scalar
        pass
    return str(value)


#: Exceptions that are the user's to fix: one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ClaySearchError,
    ValueError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


#: typer's own click (typer >= 0.22 vendors click as ``typer._click``; older ones use click).
CLICK_EXCEPTION: Any = next(  # click.ClickException: no static import path (vendored or not)
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
_PASS_THROUGH = (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt)


def _current_context():
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click import get_current_context
    return get_current_context(silent=True)


def _verbose(kwargs: dict) -> bool:
    """``--verbose`` of the command, or of ``clay-search --verbose CMD``."""
    if kwargs.get("verbose"):
        return True
    ctx = _current_context()
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and root.params.get("verbose"))


def handle_errors(func):
    """Turn every user error into one line on stderr and exit status 2.

    User errors are clay-search's own errors, click/typer parameter errors raised inside the
    command, ``ValueError`` and file-system errors. Anything else is a bug: one line naming it
    and exit status 1. ``--verbose`` (the command's or ``clay-search --verbose CMD``) prints the
    traceback first.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except CLICK_EXCEPTION as e:
            _report(e, kwargs, e.format_message())
            sys.exit(2)
        except USER_ERRORS as e:
            _report(e, kwargs, str(e) or type(e).__name__)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 - a bug: still one line unless --verbose
            _report(
                e,
                kwargs,
                f"unexpected {type(e).__name__}: {e} (a bug; rerun with --verbose for the "
                "traceback and report it)",
            )
            sys.exit(1)

    return wrapper


def derived_command(
    func: Callable[..., Any],
    options: type[OptionSet],
    *,
    head: Sequence[inspect.Parameter] = (),
    tail: Sequence[inspect.Parameter] = (),
    exclude: Sequence[str] = (),
) -> Callable[..., Any]:
    """A typer command whose options are the CLI fields of the option set ``options``.

    ``func(*head, **options, *tail)`` gets the parameters ``head`` (arguments, ``--store``),
    every CLI option of ``options`` but ``exclude`` (flag, type, default and help from its
    field), then ``tail`` (``--quiet``, ``--verbose``); errors are handled by
    :func:`handle_errors`.
    """
    cmd = handle_errors(func)
    params = [*head, *options.cli_parameters(exclude=exclude), *tail]
    cmd.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    return cmd


def keyword(
    name: str, annotation: Any, default: Any = inspect.Parameter.empty
) -> inspect.Parameter:
    """A keyword-only command parameter (for ``head``/``tail`` of :func:`derived_command`)."""
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _report(e: BaseException, kwargs: dict, message: str) -> None:
    if _verbose(kwargs):
        traceback.print_exception(e, file=sys.stderr)
    line = " ".join(message.split("\n")).strip()
    typer.secho(f"Error: {line}", fg=typer.colors.RED, err=True)


# -- options of `finetune` and `predict` (shared with any command that reads imagery) ----------
ImageSensorOpt = Annotated[
    str | None, typer.Option("--sensor", help="Sensor of every image (see `clay-search info`).")
]
BandsOpt = Annotated[
    str | None,
    typer.Option(
        "--bands", help="The files' bands in order: common names or band ids, e.g. B02,B03,B04,B08."
    ),
]
ChipSizeOpt = Annotated[int, typer.Option("--chip-size", help="Chip size in pixels (x8).")]
StrideOpt = Annotated[
    int | None, typer.Option("--stride", help="Step between chips (default: half a chip).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")]
HeadOpt = Annotated[
    Path, typer.Option("--head", help="Head folder written by `clay-search finetune`.")
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Chips per step / model call.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def split_list(value: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (``None`` for an empty value)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
