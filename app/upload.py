"""Checks on an uploaded query chip (GeoTIFF or PNG) before it reaches the search API.

Both the file name and the bytes are checked: the extension must be one we accept, the content
must really be that format (magic bytes, then opened with rasterio or Pillow), and the size and
pixel dimensions must fit a chip. Every failure is an :class:`UploadError` with a message that
says what was wrong and what to upload instead.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from clay_search.errors import ClaySearchError, UploadError

__all__ = ["MAX_UPLOAD_BYTES", "UploadError", "UploadedChip", "validate_upload"]

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_SIDE_PX = 1024
MIN_SIDE_PX = 8
MAX_BANDS = 16
MAX_DECODED_BYTES = 64 * 2**20  # pixels once decoded (width x height x bands x bytes per value)
EXTENSIONS = {".tif": "geotiff", ".tiff": "geotiff", ".png": "png"}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class UploadedChip:
    """A validated upload: its format, shape, and the original bytes."""

    name: str
    kind: str  # "geotiff" or "png"
    width: int
    height: int
    bands: int
    dtype: str
    georeferenced: bool
    data: bytes

    @property
    def suffix(self) -> str:
        """File suffix that matches the content."""
        return ".tif" if self.kind == "geotiff" else ".png"

    def describe(self) -> str:
        """One line for the page: format, size, bands, data type."""
        geo = "georeferenced" if self.georeferenced else "no georeference"
        return (
            f"{self.name}: {self.kind.upper()} {self.width}x{self.height} px, "
            f"{self.bands} band(s), {self.dtype}, {geo}"
        )

    def write_temp(self, folder: str | Path | None = None) -> Path:
        """Write the bytes to a new temporary file with the right suffix; return its path."""
        with tempfile.NamedTemporaryFile(
            suffix=self.suffix, prefix="clay-query-", dir=folder, delete=False
        ) as f:
            f.write(self.data)
        return Path(f.name)


def _sniff(data: bytes) -> str | None:
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data[:4] in _TIFF_MAGICS:
        return "geotiff"
    return None


def _check_side(name: str, width: int, height: int) -> None:
    if width > MAX_SIDE_PX or height > MAX_SIDE_PX:
        raise UploadError(
            f"{name} is {width}x{height} px; a query chip may be at most "
            f"{MAX_SIDE_PX}x{MAX_SIDE_PX} px. Crop a chip around the feature and upload that."
        )
    if width < MIN_SIDE_PX or height < MIN_SIDE_PX:
        raise UploadError(
            f"{name} is only {width}x{height} px; a query chip needs at least "
            f"{MIN_SIDE_PX}x{MIN_SIDE_PX} px."
        )


def _check_geotiff_header(name: str, ds) -> None:
    """Refuse, from the header alone, what cannot be a query chip: complex values, blocks or
    pixels that decode to more than ``MAX_DECODED_BYTES`` (decompression bombs)."""
    import numpy as np

    from clay_search.ingest.raster import check_readable

    try:
        check_readable(ds, name)
    except ClaySearchError as e:
        raise UploadError(str(e)) from e
    per_px = sum(np.dtype(t).itemsize for t in ds.dtypes)
    decoded = ds.width * ds.height * per_px
    bh, bw = ds.block_shapes[0]
    block = bh * bw * per_px
    if max(decoded, block) > MAX_DECODED_BYTES:
        raise UploadError(
            f"{name} decodes to {max(decoded, block) / 2**20:.0f} MiB; a query chip may decode "
            f"to at most {MAX_DECODED_BYTES // 2**20} MiB. Upload a smaller chip."
        )


def _open_png(name: str, data: bytes) -> UploadedChip:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow's bomb warning is an error here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                _check_side(name, width, height)
                if getattr(im, "n_frames", 1) > 1:
                    raise UploadError(f"{name} is an animated PNG; upload a single image.")
                im.load()  # decodes every pixel: a truncated or corrupt file fails here
                mode = im.mode
                bands = len(im.getbands())
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UploadError(
            f"{name} declares far more pixels than a query chip may have (a decompression "
            f"bomb?); a query chip is at most {MAX_SIDE_PX}x{MAX_SIDE_PX} px."
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UploadError(f"{name} is not a readable PNG image ({e}).") from e
    if mode not in {"L", "LA", "RGB", "RGBA", "P", "I;16", "I"}:
        raise UploadError(f"{name} has PNG colour mode {mode!r}; upload an RGB or grey PNG.")
    dtype = "uint16" if mode.startswith("I") else "uint8"
    return UploadedChip(name, "png", width, height, bands, dtype, False, data)


def _open_geotiff(name: str, data: bytes) -> UploadedChip:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.MemoryFile(data) as mem, mem.open() as ds:
                _check_side(name, ds.width, ds.height)
                if ds.count < 1 or ds.count > MAX_BANDS:
                    raise UploadError(
                        f"{name} has {ds.count} bands; a query chip has 1 to {MAX_BANDS}."
                    )
                _check_geotiff_header(name, ds)
                ds.read()  # decodes every block: a truncated or corrupt file fails here
                chip = UploadedChip(
                    name=name,
                    kind="geotiff",
                    width=ds.width,
                    height=ds.height,
                    bands=ds.count,
                    dtype=str(ds.dtypes[0]),
                    georeferenced=ds.crs is not None,
                    data=data,
                )
    except UploadError:
        raise
    except (RasterioIOError, OSError, ValueError) as e:
        raise UploadError(f"{name} is not a readable GeoTIFF ({e}).") from e
    return chip


def validate_upload(name: str, data: bytes) -> UploadedChip:
    """Check an upload's name, size and content; return it described, or raise UploadError."""
    name = Path(name or "upload").name
    suffix = Path(name).suffix.lower()
    if suffix not in EXTENSIONS:
        raise UploadError(
            f"{name}: files ending in {suffix or '(no extension)'!s} are not accepted; "
            "upload a GeoTIFF (.tif, .tiff) or a PNG (.png) chip."
        )
    if not data:
        raise UploadError(f"{name} is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"{name} is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB. "
            "Upload a single chip, not a scene."
        )
    expected = EXTENSIONS[suffix]
    found = _sniff(data)
    if found is None:
        raise UploadError(
            f"{name} does not look like a {expected.upper()} file (its first bytes match "
            "neither PNG nor TIFF)."
        )
    if found != expected:
        raise UploadError(
            f"{name} is named like a {expected.upper()} but holds a {found.upper()}; "
            "rename it or export it again."
        )
    return _open_png(name, data) if found == "png" else _open_geotiff(name, data)


MAX_LABELS_BYTES = 2 * 1024 * 1024
MAX_LABELS = 100_000
MAX_ID_CHARS = 200


def validate_labels_file(data: bytes, known_ids=None) -> dict[str, int]:
    """Labels from an uploaded labels JSON (as exported by the app), checked before use.

    Bounded size (``MAX_LABELS_BYTES``), the export's schema (``positives``/``negatives``: lists
    of chip-id strings of at most ``MAX_ID_CHARS``), at most ``MAX_LABELS`` ids, and, with
    ``known_ids`` (a container of the store's chip ids), ids that exist. Returns chip id ->
    1 (positive) / -1 (negative); every failure is an :class:`UploadError` saying what is wrong.
    """
    import json

    from clay_search.app.state import NEGATIVE, POSITIVE

    if len(data) > MAX_LABELS_BYTES:
        raise UploadError(
            f"the labels file is {len(data) / 1e6:.1f} MB; at most "
            f"{MAX_LABELS_BYTES / 1e6:.0f} MB is read"
        )
    try:
        doc = json.loads(data)
    except RecursionError as e:
        raise UploadError("the labels file nests too deeply to be a labels export") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UploadError(f"the labels file is not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not ({"positives", "negatives"} & set(doc)):
        raise UploadError(
            "the labels file has no 'positives' or 'negatives' list; restore a "
            "file saved with 'Labels JSON'"
        )
    out: dict[str, int] = {}
    for key, value in (("positives", POSITIVE), ("negatives", NEGATIVE)):
        ids = doc.get(key, [])
        if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
            raise UploadError(f"'{key}' in the labels file must be a list of chip-id strings")
        if any(len(c) > MAX_ID_CHARS or not c for c in ids):
            raise UploadError(f"'{key}' holds an empty or over-long chip id")
        for c in ids:
            out[c] = value
    if len(out) > MAX_LABELS:
        raise UploadError(f"the labels file holds {len(out):,} ids; at most {MAX_LABELS:,}")
    if known_ids is not None:
        unknown = [c for c in out if c not in known_ids]
        if unknown:
            raise UploadError(
                f"{len(unknown)} chip id(s) in the labels file are not in this store (e.g. "
                f"{unknown[0][:40]!r}); was it saved from another store?"
            )
    return out
