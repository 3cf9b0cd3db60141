"""What an ingest run reads: sources found from paths, folders and STAC documents.

A :class:`Source` is one thing that becomes chips: a raster file, a set of single-band files
of one scene (``*_B02.tif``, ``*_B8A.tif``...), a chip of a labelled folder (``<Class>/x.tif``),
or a STAC item's asset(s).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from clay_search.errors import SourceNotFoundError

RASTER_EXTS = {".tif", ".tiff", ".jp2", ".vrt", ".img", ".jpg", ".jpeg", ".png"}
#: Formats that carry no georeference by nature: a missing CRS is fine for them.
PLAIN_IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
STAC_ROOT_NAMES = ("catalog.json", "collection.json")
_BAND_FILE = re.compile(
    r"^(?P<prefix>.+)_(?P<band>B\d{1,2}A?|VV|VH|HH|HV)\.(?:tif|tiff|jp2)$", re.IGNORECASE
)


@dataclass
class Source:
    """One source of chips and what is known about it before it is opened."""

    kind: str  # "raster" | "bandset" | "labelled" | "stac"
    paths: list[str]  # one raster, or one file per band (bandset)
    identity: str  # stable text that names the source in chip ids
    display: str  # the ``source`` column
    band_keys: list[str] | None = None  # names of the bands in order, when known here
    label: str | None = None
    item_id: str | None = None
    datetime: datetime | None = None
    sensor_hint: str | None = None  # a shipped sensor named by STAC metadata
    stac_text: str | None = None  # the STAC text sensor hints are searched in
    name_parts: list[str] = field(default_factory=list)  # file and folder names (datetimes)
    stats_group: str = ""  # sources of one group share one normaliser decision
    wavelengths: list[float | None] | None = None  # from STAC eo:bands

    @property
    def needs_crs(self) -> bool:
        """Whether a missing CRS is an error (GeoTIFFs and the like, not JPEG/PNG chips)."""
        return any(Path(p).suffix.lower() not in PLAIN_IMAGE_EXTS for p in self.paths)


@dataclass
class SourceFailure:
    """A source (or argument) that could not be used, and why."""

    source: str
    error: BaseException

    @property
    def reason(self) -> str:
        """One line: the error class and message."""
        return f"{type(self.error).__name__}: {self.error}"


def _is_raster_name(p: Path) -> bool:
    return p.suffix.lower() in RASTER_EXTS


def _raster_source(path: Path, *, label: str | None = None, group: str | None = None) -> Source:
    m = _BAND_FILE.match(path.name)
    return Source(
        kind="labelled" if label is not None else "raster",
        paths=[str(path)],
        identity=str(path.resolve()),
        display=str(path),
        band_keys=[m.group("band").upper()] if m else None,
        label=label,
        name_parts=[path.stem, *[p.name for p in path.parents][:3]],
        stats_group=group or str(path.resolve()),
    )


def _bandset_source(prefix: str, folder: Path, files: list[tuple[str, Path]]) -> Source:
    files = sorted(files, key=lambda bf: bf[0])
    ext = files[0][1].suffix
    return Source(
        kind="bandset",
        paths=[str(f) for _, f in files],
        identity="|".join(str(f.resolve()) for _, f in files),
        display=str(folder / f"{prefix}_{{band}}{ext}"),
        band_keys=[b for b, _ in files],
        name_parts=[prefix, folder.name, *[p.name for p in folder.parents][:2]],
        stats_group="|".join(str(f.resolve()) for _, f in files),
    )


def group_files(folder: Path, files: list[Path]) -> list[Source]:
    """Sources from the raster files of one folder: band sets grouped, others one each."""
    sets: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    singles: list[Path] = []
    for f in files:
        m = _BAND_FILE.match(f.name)
        if m:
            sets[m.group("prefix")].append((m.group("band").upper(), f))
        else:
            singles.append(f)
    out: list[Source] = []
    for prefix, members in sorted(sets.items()):
        if len(members) >= 2:
            out.append(_bandset_source(prefix, folder, members))
        else:
            singles.append(members[0][1])
    out.extend(_raster_source(f) for f in sorted(singles))
    return sorted(out, key=lambda s: s.display)


def _children(folder: Path) -> tuple[list[Path], list[Path]]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise SourceNotFoundError(f"cannot list folder {folder}: {e}") from e
    files = [e for e in entries if e.is_file() and _is_raster_name(e)]
    dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    return files, dirs


def _is_labelled(folder: Path, files: list[Path], dirs: list[Path]) -> bool:
    """``<folder>/<Class>/*.tif|jpg``: two or more class folders of plain chips, nothing else."""
    if files or len(dirs) < 2:
        return False
    for d in dirs:
        sub_files, sub_dirs = _children(d)
        if sub_dirs or not sub_files:
            return False
        if any(_BAND_FILE.match(f.name) for f in sub_files):
            return False
        if any((d / n).exists() for n in STAC_ROOT_NAMES):
            return False
    return True


def walk_folder(
    folder: Path, params_assets: list[str] | None = None, _seen: set[Path] | None = None
) -> list[Source | SourceFailure]:
    """Every source under ``folder`` (recursive, sorted, deterministic).

    Each real folder is walked once: a symlink back to a folder already walked (a loop) is
    reported and not followed.
    """
    seen = set() if _seen is None else _seen
    real = folder.resolve()
    if real in seen:
        return [
            SourceFailure(
                str(folder),
                SourceNotFoundError(
                    f"{folder} leads to {real}, which was already walked (a symlink loop or a "
                    "second link to it); it is read once"
                ),
            )
        ]
    seen.add(real)
    for name in STAC_ROOT_NAMES:
        if (folder / name).exists():
            from clay_search.ingest.stac import stac_sources

            return stac_sources(str(folder / name), params_assets)
    files, dirs = _children(folder)
    if _is_labelled(folder, files, dirs):
        out: list[Source | SourceFailure] = []
        group = str(folder.resolve())
        for d in dirs:
            sub_files, _ = _children(d)
            out.extend(_raster_source(f, label=d.name, group=group) for f in sub_files)
        return out
    out = list(group_files(folder, files))
    for d in dirs:
        out.extend(walk_folder(d, params_assets, seen))
    return out


def discover(args: list[str], assets: list[str] | None = None) -> list[Source | SourceFailure]:
    """Sources for the command-line arguments (files, folders, STAC JSON paths or URLs)."""
    out: list[Source | SourceFailure] = []
    loose: dict[Path, list[Path]] = defaultdict(list)  # explicit files, grouped per folder
    for arg in args:
        arg = str(arg)
        try:
            if re.match(r"^https?://", arg) or arg.endswith(".json"):
                from clay_search.ingest.stac import stac_sources

                if not re.match(r"^https?://", arg) and not Path(arg).exists():
                    raise SourceNotFoundError(f"{arg} does not exist; give a STAC JSON file")
                out.extend(stac_sources(arg, assets))
                continue
            p = Path(arg)
            if not p.exists():
                raise SourceNotFoundError(
                    f"{arg} does not exist; give raster files, folders or STAC JSON files"
                )
            if p.is_dir():
                out.extend(walk_folder(p, assets))
            else:
                loose[p.parent].append(p)
        except Exception as e:  # noqa: BLE001 - reported per argument, the others continue
            out.append(SourceFailure(arg, e))
    for folder, files in loose.items():
        out.extend(group_files(folder, list(dict.fromkeys(files))))
    return out
