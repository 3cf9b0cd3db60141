"""Windowed reads of one source on a common pixel grid.

Single files are read directly; the files of a band set (or of a multi-asset STAC item) are
resampled onto the grid of the finest one with a ``WarpedVRT``. Reads outside the raster are
padded and marked invalid, so every chip has the requested size and memory stays bounded by the
chip size, whatever the scene size. Pixels keep the files' data type (uint8 NAIP stays uint8):
the normaliser makes the float32 the model sees, so reading never copies a float32 block.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from clay_search.errors import MissingCRSError, SourceNotFoundError, SourceReadError
from clay_search.ingest.sources import Source

_URL = re.compile(r"^(https?|s3|gs)://")
BLOCK_BYTES = 32 * 2**20  # pixels of one block read by SourceReader.read_many
#: Bounds on what a file may declare before anything is read (see :func:`check_readable`).
MAX_DECODED_BLOCK_BYTES = 256 * 2**20  # one strip or tile, decoded
MAX_BANDS = 2048
MAX_PIXELS = 2**36  # 262,144 px square: beyond it, split the scene


def _gdal_path(path: str) -> str:
    if path.startswith(("http://", "https://")):
        return "/vsicurl/" + path
    return path


def gdal_reason(e: BaseException | None) -> str:
    """The most specific message in a rasterio error's chain (GDAL's own words, not rasterio's
    "Read failed. See previous exception for details.")."""
    msgs, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).strip()
        if text and "See previous exception" not in text:
            msgs.append(text)
        e = e.__cause__ or e.__context__
    return msgs[-1] if msgs else "unknown GDAL error"


def _check_vrt(path) -> None:
    """Refuse a GDAL VRT (whatever its name) whose bands read other files' raw bytes as pixels
    (``VRTRawRasterBand``): a VRT from a catalog could point at any file on this machine."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
            if not head.startswith(b"<VRTDataset"):
                return
            text = head + f.read(16 * 2**20)
    except OSError:
        return  # rasterio reports what is wrong with the file
    if b"VRTRawRasterBand" in text:
        raise SourceReadError(
            f"{path} is a GDAL VRT with raw bands (VRTRawRasterBand) that read the bytes of "
            "other files as pixels; this is refused: convert the data to a GeoTIFF "
            "(gdal_translate IN.vrt OUT.tif) and ingest that"
        )


def check_readable(ds, name: str) -> None:
    """Refuse an open dataset that cannot be read chip by chip with bounded memory.

    Checked against the header only, before any pixel is read: real-valued bands (complex SAR
    samples are refused), at least one pixel and one band, at most ``MAX_PIXELS`` pixels and
    ``MAX_BANDS`` bands, and
    strips/tiles that decode to at most ``MAX_DECODED_BLOCK_BYTES`` (GDAL decodes a whole block
    to read any window of it, so one huge strip would need its whole size in memory).
    """
    dtypes = [str(t) for t in ds.dtypes]
    odd = sorted({t for t in dtypes if t.startswith("complex")})
    if odd:
        raise SourceReadError(
            f"{name} holds complex-valued samples ({', '.join(odd)}), e.g. SAR single-look "
            "complex data; clay-search embeds real values: convert it to amplitude or intensity "
            "first (e.g. gdal_calc.py -A IN --calc='abs(A)' --type=Float32 --outfile=OUT.tif)"
        )
    if ds.width < 1 or ds.height < 1 or ds.count < 1:
        raise SourceReadError(
            f"{name} declares {ds.width} x {ds.height} px and {ds.count} bands: no pixels to read"
        )
    pixels = int(ds.width) * int(ds.height)
    if pixels > MAX_PIXELS:
        raise SourceReadError(
            f"{name} declares {ds.width:,} x {ds.height:,} px ({pixels:,}), more than the "
            f"{MAX_PIXELS:,} one source may have; if the size is real, split the scene "
            "(gdal_retile.py), else the header is corrupt"
        )
    if ds.count > MAX_BANDS:
        raise SourceReadError(
            f"{name} declares {ds.count} bands (at most {MAX_BANDS} are read); select the bands "
            "you need first (gdal_translate -b ...)"
        )
    interleaved = getattr(ds, "interleaving", None) is not None and ds.interleaving.name == "pixel"
    per_px = (
        sum(np.dtype(t).itemsize for t in dtypes)
        if interleaved
        else max(np.dtype(t).itemsize for t in dtypes)
    )
    bh, bw = (max(v) for v in zip(*ds.block_shapes, strict=True))
    block = int(bh) * int(bw) * per_px
    if block > MAX_DECODED_BLOCK_BYTES:
        raise SourceReadError(
            f"{name} is stored in blocks of {bw} x {bh} px ({block / 2**20:,.0f} MiB decoded, "
            f"more than {MAX_DECODED_BLOCK_BYTES // 2**20} MiB), so it cannot be read window by "
            "window; retile it first (gdal_translate -co TILED=YES IN.tif OUT.tif) or check "
            "that the header is not corrupt"
        )


@dataclass
class RasterMeta:
    """What a source looks like on its common grid."""

    width: int
    height: int
    count: int  # bands over all files, in source order
    dtype: str  # of the pixels read (the common type of every file's bands)
    crs: object | None  # rasterio CRS or None
    transform: object  # affine.Affine
    nodata: list[float | None]  # per band
    descriptions: list[str | None]
    colorinterp: list[str]
    georeferenced: bool
    tags: dict[str, str] = field(default_factory=dict)  # the first file's dataset tags


class SourceReader:
    """Open a :class:`Source` and read windows of chosen bands (0-based, source order).

    ``nodata`` overrides the files' nodata value in every band (for files that declare none,
    such as black collars around a rotated scene).
    """

    def __init__(self, source: Source, *, nodata: float | None = None) -> None:
        self.source = source
        self.nodata = nodata
        self._datasets: list = []
        self._views: list = []
        self._band_file: list[tuple[int, int]] = []  # band -> (file index, 1-based band)
        self.meta: RasterMeta | None = None

    @property
    def opened(self) -> RasterMeta:
        """The metadata of the opened source (reads need :meth:`open` first)."""
        if self.meta is None:
            raise RuntimeError("the source is not open yet; call open() before reading")
        return self.meta

    # -- opening ---------------------------------------------------------------------------
    def _open_one(self, path: str):
        is_url = bool(_URL.match(path))
        if not is_url:
            from pathlib import Path

            if not Path(path).exists():
                raise SourceNotFoundError(f"{path} does not exist (asset or file missing)")
            _check_vrt(Path(path))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(_gdal_path(path), NUM_THREADS="ALL_CPUS")
        except RasterioIOError as e:
            if is_url:
                raise SourceNotFoundError(
                    f"could not reach {path} ({e}); check the network or use a local copy"
                ) from e
            raise SourceReadError(
                f"{path} cannot be read as a raster ({e}); is it a corrupt or truncated "
                "GeoTIFF, or not an image at all?"
            ) from e
        try:
            check_readable(ds, path)
        except Exception:
            ds.close()
            raise
        return ds

    def open(self) -> RasterMeta:
        """Open the files and work out the common grid (the finest file's grid)."""
        try:
            for p in self.source.paths:
                self._datasets.append(self._open_one(p))
            ref = min(self._datasets, key=lambda d: abs(d.transform.a) * abs(d.transform.e))
            georef = ref.crs is not None and not ref.transform.is_identity
            if not georef and self.source.needs_crs and ref.gcps[0]:
                raise MissingCRSError(
                    f"{self.source.display} is georeferenced by ground control points (GCPs) "
                    "only, with no geotransform; warp it onto a grid first (gdalwarp -r "
                    "bilinear IN.tif OUT.tif), then ingest OUT.tif"
                )
            if not georef and self.source.needs_crs:
                raise MissingCRSError(
                    f"{self.source.display} has no CRS or geotransform, so its chips cannot be "
                    "placed on the map; assign one (e.g. gdal_edit.py -a_srs EPSG:XXXX "
                    "-a_ullr ...) or ingest it as a JPEG/PNG chip without georeference"
                )
            views = []
            for d in self._datasets:
                same = (
                    d.width == ref.width
                    and d.height == ref.height
                    and d.transform.almost_equals(ref.transform)
                    and d.crs == ref.crs
                )
                if same or not georef:
                    views.append(d)
                else:
                    views.append(
                        WarpedVRT(
                            d,
                            crs=ref.crs,
                            transform=ref.transform,
                            width=ref.width,
                            height=ref.height,
                            resampling=Resampling.bilinear,
                            src_nodata=d.nodata,
                            nodata=d.nodata,
                        )
                    )
            self._views = views
            nodata, desc, ci = [], [], []
            for fi, d in enumerate(self._datasets):
                for bi in range(1, d.count + 1):
                    self._band_file.append((fi, bi))
                    nodata.append(d.nodata if self.nodata is None else self.nodata)
                    desc.append(d.descriptions[bi - 1])
                    try:
                        ci.append(d.colorinterp[bi - 1].name)
                    except (IndexError, AttributeError):
                        ci.append(ColorInterp.undefined.name)
            self.meta = RasterMeta(
                width=ref.width,
                height=ref.height,
                count=len(self._band_file),
                dtype=str(np.result_type(*[t for d in self._datasets for t in d.dtypes])),
                crs=ref.crs if georef else None,
                transform=ref.transform,
                nodata=nodata,
                descriptions=desc,
                colorinterp=ci,
                georeferenced=georef,
                tags=dict(self._datasets[0].tags()),
            )
            return self.meta
        except Exception:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------------
    def read(
        self, window: Window, bands: list[int], out_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw values ``[C, h, w]`` (the files' type) of ``bands`` in ``window``, and a valid mask.

        ``out_size`` resamples the window to ``out_size`` x ``out_size`` (whole-file chips).
        Pixels outside the raster, non-finite or nodata in every band are invalid.
        """
        assert self.meta is not None, "open() first"
        m = self.meta
        if out_size is not None:
            return self._read_resampled(window, bands, out_size)
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, m.height), min(c0 + w, m.width)
        out = np.zeros((len(bands), h, w), dtype=m.dtype)
        valid = np.zeros((h, w), dtype=bool)
        if rr1 > rr0 and cc1 > cc0:
            sub = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            ys, xs = slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0)
            block = self._read_bands(bands, sub)
            out[:, ys, xs] = block
            valid[ys, xs] = self._valid(block, bands)
        return out, valid

    def _valid(self, block: np.ndarray, bands: list[int]) -> np.ndarray:
        """``[h, w]``: finite in every band, and not nodata in all of them."""
        nod = np.ones(block.shape[1:], dtype=bool)
        floating = block.dtype.kind == "f"
        for i, b in enumerate(bands):
            data = block[i]
            nd = self.opened.nodata[b]
            has_nd = nd is not None and np.isfinite(nd)
            if floating:
                band_nod = ~np.isfinite(data)
                if has_nd:
                    band_nod |= data == nd
            elif has_nd:
                band_nod = data == nd
            else:  # an integer band without nodata is valid everywhere, so every pixel is
                return np.ones(block.shape[1:], dtype=bool)
            nod &= band_nod
        if floating:
            return ~nod & np.isfinite(block).all(0)
        return ~nod

    def read_many(
        self, windows: list[Window], bands: list[int]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`read` of several windows, with one file read per block of nearby windows.

        Consecutive windows are gathered into blocks (the bounding box of their parts inside
        the raster, at most ``BLOCK_BYTES`` of float32 pixels and at most twice the area of the
        windows in it); each block is read once and the chips are sliced out of it, so the
        pixels and valid masks are the same as :meth:`read` gives window by window. Sources
        resampled through a ``WarpedVRT`` are read window by window.
        """
        assert self.meta is not None, "open() first"
        m = self.meta
        if any(isinstance(v, WarpedVRT) for v in self._views):
            return [self.read(w, bands) for w in windows]
        out: list = [None] * len(windows)
        px_bytes = np.dtype(m.dtype).itemsize * max(len(bands), 1)
        groups: list[list[tuple[int, int, int, int, int]]] = []  # (index, r0, c0, h, w)
        box = None  # (r0, r1, c0, c1) of the current group, inside the raster
        area = 0
        for k, win in enumerate(windows):
            h, w = int(win.height), int(win.width)
            r0, c0 = int(win.row_off), int(win.col_off)
            rr0, rr1 = max(r0, 0), min(r0 + h, m.height)
            cc0, cc1 = max(c0, 0), min(c0 + w, m.width)
            if rr1 <= rr0 or cc1 <= cc0:
                out[k] = self.read(win, bands)  # wholly outside the raster: nothing to read
                continue
            a = (rr1 - rr0) * (cc1 - cc0)
            if box is not None:
                nb = (min(box[0], rr0), max(box[1], rr1), min(box[2], cc0), max(box[3], cc1))
                nb_area = (nb[1] - nb[0]) * (nb[3] - nb[2])
                if nb_area * px_bytes <= BLOCK_BYTES and nb_area <= 2 * (area + a):
                    box, area = nb, area + a
                    groups[-1].append((k, r0, c0, h, w))
                    continue
            box, area = (rr0, rr1, cc0, cc1), a
            groups.append([(k, r0, c0, h, w)])
        for g in groups:
            br0 = min(max(r0, 0) for _, r0, _, _, _ in g)
            br1 = max(min(r0 + h, m.height) for _, r0, _, h, _ in g)
            bc0 = min(max(c0, 0) for _, _, c0, _, _ in g)
            bc1 = max(min(c0 + w, m.width) for _, _, c0, _, w in g)
            block = self._read_bands(bands, Window(bc0, br0, bc1 - bc0, br1 - br0))
            bvalid = self._valid(block, bands)
            for k, r0, c0, h, w in g:
                rr0, rr1 = max(r0, 0), min(r0 + h, m.height)
                cc0, cc1 = max(c0, 0), min(c0 + w, m.width)
                bys, bxs = slice(rr0 - br0, rr1 - br0), slice(cc0 - bc0, cc1 - bc0)
                if (rr0, rr1, cc0, cc1) == (r0, r0 + h, c0, c0 + w):
                    raw = block[:, bys, bxs]  # a view: the batch stack copies it once
                    valid = bvalid[bys, bxs]
                else:  # partly outside the raster: padded with zeros, marked invalid
                    ys, xs = slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0)
                    raw = np.zeros((len(bands), h, w), dtype=block.dtype)
                    valid = np.zeros((h, w), dtype=bool)
                    raw[:, ys, xs] = block[:, bys, bxs]
                    valid[ys, xs] = bvalid[bys, bxs]
                out[k] = (raw, valid)
        return out

    def _read_bands(self, bands: list[int], window: Window, out_shape=None) -> np.ndarray:
        """Read ``bands`` (one read per file) as ``[C, h, w]`` of the files' common type."""
        by_file: dict[int, list[tuple[int, int]]] = {}
        for i, b in enumerate(bands):
            fi, bi = self._band_file[b]
            by_file.setdefault(fi, []).append((i, bi))
        shape = out_shape or (int(window.height), int(window.width))
        if len(by_file) == 1:  # one file: its read is the block (no copy)
            ((fi, members),) = by_file.items()
            return self._read_file(fi, members, window, out_shape)
        out = np.empty((len(bands), *shape), dtype=self.opened.dtype)
        for fi, members in by_file.items():
            data = self._read_file(fi, members, window, out_shape)
            for k, (i, _) in enumerate(members):
                out[i] = data[k]
        return out

    def _read_file(
        self, fi: int, members: list[tuple[int, int]], window: Window, out_shape
    ) -> np.ndarray:
        """Bands ``members`` ((output index, 1-based band)) of file ``fi``, in that order."""
        kw = {"window": window, "indexes": [bi for _, bi in members]}
        if out_shape is not None:
            kw.update(out_shape=(len(members), *out_shape), resampling=Resampling.bilinear)
        try:
            data = self._views[fi].read(**kw)
        except (RasterioError, OSError) as e:
            raise SourceReadError(
                f"reading {self.source.paths[fi]} failed ({gdal_reason(e)}); the file may be "
                "truncated or corrupt"
            ) from e
        return data.astype(self.opened.dtype, copy=False)

    def _read_resampled(
        self, window: Window, bands: list[int], size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        block = self._read_bands(bands, window, out_shape=(size, size))
        return block, self._valid(block, bands)

    def close(self) -> None:
        """Close every file and view."""
        for v in self._views:
            if isinstance(v, WarpedVRT):
                v.close()
        for d in self._datasets:
            d.close()
        self._views, self._datasets = [], []

    def __enter__(self) -> SourceReader:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
