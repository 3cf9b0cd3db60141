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

from clay_search.errors import UploadError

__all__ = ["MAX_UPLOAD_BYTES", "UploadError", "UploadedChip", "validate_upload"]

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_SIDE_PX = 1024
MIN_SIDE_PX = 8
MAX_BANDS = 16
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


def _open_png(name: str, data: bytes) -> UploadedChip:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            _check_side(name, width, height)
            im.load()  # decodes every pixel: a truncated or corrupt file fails here
            mode = im.mode
            bands = len(im.getbands())
    except UploadError:
        raise
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
