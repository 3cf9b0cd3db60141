"""The options of an ingest run, defined once.

Each option is one field of :class:`IngestParams`: its name (the Python keyword; the CLI flag is
the name with dashes), type, default, help text and validation live in that field. The
``clay-search ingest`` command and the Python entry point (:func:`clay_search.ingest.ingest`)
are both derived from these fields by :class:`clay_search.optionset.OptionSet`, as rasterio's
``rio/options.py`` defines each option once for every command.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clay_search.dates import DatePeriod
from clay_search.errors import IngestOptionError
from clay_search.optionset import OptionSet, choice, opt

__all__ = ["IngestOptionError", "IngestParams", "auto_workers"]

DEFAULT_CHIP_SIZE = 64
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_NODATA = 0.5
DEFAULT_FLUSH_ROWS = 2048  # rows per commit, at most
DEFAULT_FLUSH_SECONDS = 30.0  # a commit at least this often while rows are waiting
THUMBNAIL_SIZE = 64
STATS_CHOICES = ("auto", "sensor", "source")
STATS_SCOPES = ("series", "source")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "tf32", "int8")  # model/calibration.py


# -- parsing and checks used by the fields ---------------------------------------------------------
ENGINES = ("local", "ray")


def split_names(value: str | Sequence[str] | None) -> list[str] | None:
    """``"a, b"`` or ``["a", "b"]`` as a list of stripped names; None or empty: None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    out = [v.strip() for v in items if str(v).strip()]
    return out or None


def _floats(value: str | Sequence[float] | None) -> list[float] | None:
    names = split_names(
        value if isinstance(value, str) or value is None else [str(v) for v in value]
    )
    if names is None:
        return None
    try:
        return [float(v) for v in names]
    except ValueError:
        raise IngestOptionError(
            f"--bbox {value!r} must be four numbers minx,miny,maxx,maxy"
        ) from None


def _datetime(value: Any) -> DatePeriod | None:
    from clay_search.ingest.datetimes import parse_datetime_option

    return parse_datetime_option(value)


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _positive(flag: str, what: str = "a positive number") -> Callable[[Any], str | None]:
    return lambda v: None if v is None or v > 0 else f"{flag} {v} must be {what}"


def _check_bands(v: list[str] | None) -> str | None:
    if not v:
        return None
    low = [b.lower() for b in v]
    dup = sorted({b for b in v if low.count(b.lower()) > 1})
    if dup:
        return (
            f"--bands {','.join(v)} names {', '.join(dup)} more than once; name each band "
            "of the file once, in file order"
        )
    return None


def _check_thumbnail_bands(v: list[str] | None) -> str | None:
    if v is not None and len(v) not in (1, 3):
        return (
            f"--thumbnail-bands {','.join(v)} must name 3 bands (red, green, blue of the "
            "picture, e.g. nir08,red,green) or 1 (grey)"
        )
    return None


def _check_stats(v: str) -> str | None:
    if v in STATS_CHOICES or Path(v).is_file():
        return None
    return (
        f"--stats {v!r} must be auto, sensor, source or an existing JSON file mapping band "
        'names to {"mean": ..., "std": ...}'
    )


@dataclass
class IngestParams(OptionSet):
    """Everything that shapes an ingest run: which chips, how they are embedded and written.

    Build it with :meth:`from_options` (parses and checks every value); each field documents
    one option of ``clay-search ingest`` and :func:`clay_search.ingest.ingest`.
    """

    option_error: ClassVar[type[Exception]] = IngestOptionError
    option_kind: ClassVar[str] = "ingest"

    sensor: str | None = opt(None, "Sensor of every source (see `clay-search info`).")
    chip_size: int = opt(
        DEFAULT_CHIP_SIZE,
        "Chip size in pixels (multiple of the model's patch size 8).",
        check=_positive("--chip-size"),
    )
    stride: int | None = opt(
        None,
        "Step between chips in pixels (default: the chip size).",
        check=_positive("--stride", "a positive number of pixels"),
    )
    bands: list[str] | None = opt(
        None,
        "The file's bands in order: common names or the sensor's band ids, e.g. "
        "B02,B03,B04,B08 (ids are per sensor: Landsat 8 B2 is Landsat 7 B1).",
        parse=split_names,
        check=_check_bands,
        cli_type=str,
    )
    weights: Path | None = opt(
        None, "Weights folder or Clay .ckpt (default: the bundled weights).", parse=_path
    )
    batch_size: int = opt(
        DEFAULT_BATCH_SIZE, "Chips per model call.", check=_positive("--batch-size", ">= 1")
    )
    workers: int | None = opt(
        None,
        "Reader threads (0: read in the main thread). Default: 2 with a GPU; on the CPU "
        "only the logical CPUs torch leaves free.",
        check=lambda v: None if v is None or v >= 0 else f"--workers {v} must be >= 0",
    )
    datetime: DatePeriod | None = opt(
        None,
        "Acquisition time of every source: ISO 8601 date/time, a year (1985) or a month "
        "(1985-07), stored as the period's midpoint. Overrides every other date.",
        parse=_datetime,
        cli_type=str,
    )
    dates: Path | None = opt(
        None, 'CSV or JSON of per-file dates (columns file,date; or {"file": "date"}).', parse=_path
    )
    patch_embeddings: bool = opt(False, "Also store the patch-embedding grid.")
    quality_score: bool = opt(
        True,
        "Store each chip's quality score (recon_error: the model's masked reconstruction "
        "error; high = cloudy, broken or unusual). Needs weights with a decoder (else null); "
        "about doubles ingest time on a CPU.",
        flag="--quality-score/--no-quality-score",
    )
    max_nodata: float = opt(
        DEFAULT_MAX_NODATA,
        "Skip chips with more than this fraction of nodata.",
        check=lambda v: None if 0.0 <= v <= 1.0 else f"--max-nodata {v} must be between 0 and 1",
    )
    nodata: float | None = opt(
        None,
        "Treat this value as nodata in every band, overriding the files' own (e.g. 0 for "
        "black collars in files that declare no nodata).",
    )
    stats: str = opt(
        "auto",
        "Normalisation: auto, sensor, source, or a JSON file of band mean/std.",
        check=_check_stats,
    )
    stats_scope: str = opt(
        "series",
        "Who shares computed statistics: series (the sources of one sensor, band set "
        "and data type in this run, so a time series stays comparable) or source (each file "
        "its own).",
        check=choice("--stats-scope", STATS_SCOPES),
    )
    thumbnail_bands: list[str] | None = opt(
        None,
        "Bands of the thumbnails (3: red,green,blue of the picture; 1: grey), e.g. "
        "nir08,red,green. Default: the sensor's composite for the bands read.",
        parse=split_names,
        check=_check_thumbnail_bands,
        cli_type=str,
    )
    assets: list[str] | None = opt(
        None, "STAC asset keys to read, e.g. analytic.", parse=split_names, cli_type=str
    )
    sensors_file: Path | None = opt(
        None, "YAML of extra sensors (shaped like clay_search/model/sensors.yaml).", parse=_path
    )
    precision: str = opt(
        "auto",
        "auto (measured on this machine, cached), fp32, bf16, fp16, tf32 (CUDA) or int8 (CPU, "
        "opt-in).",
        check=choice("--precision", PRECISIONS),
    )
    device: str = opt("cpu", "cpu or cuda.")
    fail_fast: bool = opt(False, "Stop at the first bad source.")
    flush_rows: int = opt(
        DEFAULT_FLUSH_ROWS,
        "Rows per commit, at most.",
        check=_positive("flush_rows", ">= 1"),
        cli=False,
    )
    flush_seconds: float = opt(
        DEFAULT_FLUSH_SECONDS,
        "A commit at least this often (seconds).",
        check=_positive("flush_seconds"),
        cli=False,
    )
    stac_api: str | None = opt(None, "STAC API URL to search (online; needs the stac-api extra).")
    collection: list[str] | None = opt(
        None, "STAC API collection(s), comma-separated.", parse=split_names, cli_type=str
    )
    bbox: list[float] | None = opt(
        None, "STAC API bbox: minx,miny,maxx,maxy.", parse=_floats, cli_type=str
    )
    search_datetime: str | None = opt(None, "STAC API datetime range.")
    max_items: int = opt(100, "STAC API item limit.", check=_positive("--max-items"))
    progress: bool = opt(False, "Show a progress bar.", cli=False)
    engine: str = opt(
        "local",
        "local (threads in this process) or ray (a Ray Data pipeline; "
        "needs the distributed extra).",
        check=choice("--engine", ENGINES),
    )
    ray_address: str | None = opt(
        None,
        "Ray cluster to join with --engine ray (auto: the "
        "running one; default: start a local one).",
    )
    num_gpus: float | None = opt(
        None,
        "GPUs for the embedding actors with --engine ray (one actor per GPU; default: CPU actors).",
        check=lambda v: None if v is None or v >= 0 else f"--num-gpus {v} must be >= 0",
    )
    extra: dict = field(default_factory=dict, metadata={"cli": False, "internal": True})

    # -- checks and derived values ---------------------------------------------------------------
    def check(self, patch_size: int) -> None:
        """Raise :class:`IngestOptionError` for values that cannot work with the model."""
        if self.engine == "ray" and importlib.util.find_spec("ray") is None:
            raise IngestOptionError(
                "--engine ray needs Ray: pip install 'clay-search[distributed]' (nothing was "
                "written)"
            )
        if self.chip_size <= 0 or self.chip_size % patch_size:
            raise IngestOptionError(
                f"--chip-size {self.chip_size} must be a positive multiple of the model's patch "
                f"size {patch_size} (e.g. 64, 128 or 256)"
            )

    def stac_search(self) -> dict | None:
        """The STAC API search of ``--stac-api`` and its companions, or None."""
        if not self.stac_api:
            return None
        return {
            "url": self.stac_api,
            "collections": self.collection or [],
            "bbox": self.bbox,
            "datetime": self.search_datetime,
            "max_items": self.max_items,
        }

    def reader_threads(self, device) -> int:
        """``workers``, or when not set, :func:`auto_workers` for ``device``."""
        return self.workers if self.workers is not None else auto_workers(device)

    @property
    def step(self) -> int:
        """The stride in pixels (the chip size when not given)."""
        return self.stride or self.chip_size

    @property
    def forced_datetime(self) -> dt.datetime | None:  # (the field `datetime` shadows the class)
        """``--datetime`` as the datetime stored (a period's midpoint), or None."""
        return None if self.datetime is None else self.datetime.midpoint

    def to_dict(self) -> dict:
        """JSON-able form for the run manifest."""
        d = asdict(self)
        if self.datetime is not None:
            d["datetime"] = self.datetime.midpoint.isoformat()
            d["datetime_precision"] = self.datetime.precision
        for k in ("weights", "dates", "sensors_file"):
            d[k] = None if d[k] is None else str(d[k])
        return d


def auto_workers(device) -> int:
    """Reader threads that overlap reading with inference without slowing the model.

    With a GPU the model leaves the CPU free: 2 threads. On the CPU, torch's intra-op threads
    already use the cores it sees; readers only get the logical CPUs left over (0 on a 2-vCPU
    machine, where reading in between batches measured faster than reader threads competing
    with torch: see docs/benchmarks.md), at most 2.
    """
    import os

    import torch

    if str(getattr(device, "type", device)) != "cpu":
        return 2
    spare = (os.cpu_count() or 1) - torch.get_num_threads()
    return max(0, min(2, spare))
