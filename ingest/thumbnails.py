"""Small RGB thumbnails of chips, as PNG bytes for the app.

Made for many chips of one shape at once: block averaging to the thumbnail size first, then a
2-98 % stretch per chip and band (from a fixed random sample of its pixels), then one PNG each
(the "Sub" row filter, then deflate: ISA-L's fast level 1 when ``isal`` is installed, zlib's
Huffman-only coding otherwise).
"""

from __future__ import annotations

import functools
import struct
import zlib
from types import ModuleType

import numpy as np

STRETCH_SAMPLES = 512  # pixels per band a 2-98 % stretch is estimated from

_fast_zlib: ModuleType | None
try:  # ISA-L deflate: about 2.5x faster than zlib's cheapest mode at the same size
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _fast_zlib = None


def thumbnail_png(
    chip: np.ndarray,
    valid: np.ndarray,
    rgb: list[int] | None,
    *,
    size: int = 64,
    log: bool = False,
    stretch: tuple[np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """A small PNG: ``rgb`` band indices (grey from the first band otherwise), 2-98 % stretch."""
    return thumbnails_png([chip], [valid], rgb, size=size, log=log, stretch=stretch)[0]


def thumbnails_png(
    chips: list[np.ndarray],
    valids: list[np.ndarray],
    rgb: list[int] | None,
    *,
    size: int = 64,
    log: bool = False,
    stretch: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[bytes]:
    """:func:`thumbnail_png` of several chips ``[C, h, w]`` of one shape.

    Chips larger than ``size`` by a whole factor are averaged over blocks (invalid pixels left
    out) before anything else, so the stretch and the PNG see at most ``size`` x ``size``
    pixels; other shapes are resized after the stretch. Invalid pixels are black.
    ``stretch`` (low ``[3]``, high ``[3]``, e.g. of a whole series) is used for every chip
    instead of each chip's own 2-98 % stretch.
    """
    if not chips:
        return []
    idx = rgb if rgb and len(rgb) == 3 else [0, 0, 0]
    img = np.stack([c[idx] for c in chips])  # [N, 3, h, w], the chips' type
    valid = np.stack(valids)  # [N, h, w]
    n, _, h, w = img.shape
    if h == w and h > size and h % size == 0:
        img, valid = block_mean(img, valid, h // size)  # float32
    else:
        img = img.astype(np.float32, copy=False)  # the stack is already a fresh array
    if log:  # after the mean: backscatter is averaged as power
        img = 10 * np.log10(np.maximum(img, np.float32(1e-10)))
    if stretch is not None:
        lo = np.broadcast_to(np.asarray(stretch[0], np.float32), (n, 3))
        hi = np.broadcast_to(np.asarray(stretch[1], np.float32), (n, 3))
    else:
        lo, hi = _stretch(img, valid)
    scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)
    img -= lo[:, :, None, None]
    img *= scale[:, :, None, None]
    np.clip(img, 0, 255, out=img)
    out = img.astype(np.uint8)
    out *= valid[:, None]
    pix = np.ascontiguousarray(np.moveaxis(out, 1, -1))  # [N, h', w', 3]
    if pix.shape[1:3] != (size, size):
        from PIL import Image

        pix = np.stack(
            [
                np.asarray(
                    Image.fromarray(p, mode="RGB").resize((size, size), Image.Resampling.BILINEAR)
                )
                for p in pix
            ]
        )
    return png_rgb8(pix)


def _stretch(img: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2nd and 98th percentiles ``[N, 3]`` of each chip's valid pixels, per band."""
    n = img.shape[0]
    flat = img.reshape(n, 3, -1)
    mask = valid.reshape(n, -1)
    full = mask.all(1)
    lo, hi = np.zeros((n, 3), np.float32), np.zeros((n, 3), np.float32)
    if full.any():  # chips without invalid pixels: one partition for all of them
        vals = flat[:, :, _sample_index(flat.shape[2])][full]  # gather, then select
        lo[full], hi[full] = _quantiles(vals)
    for i in np.flatnonzero(~full).tolist():
        vals = flat[i][:, mask[i]] if mask[i].any() else flat[i]
        vals = vals[:, _sample_index(vals.shape[1])]
        q_lo, q_hi = _quantiles(vals[None])
        lo[i], hi[i] = q_lo[0], q_hi[0]
    return lo, hi


@functools.lru_cache(maxsize=32)
def _sample_index(npix: int) -> np.ndarray:
    """A fixed pseudo-random subset of ``STRETCH_SAMPLES`` pixel positions (all when fewer).

    Random, not strided: a stride over row-major pixels samples the same columns in every
    row and misses features aligned with them (a dark field edge running north-south).
    """
    if npix <= STRETCH_SAMPLES:
        return np.arange(npix)
    rng = np.random.default_rng(npix)
    return np.sort(rng.choice(npix, STRETCH_SAMPLES, replace=False))


def _quantiles(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-rank 2nd and 98th percentiles of ``[M, 3, S]`` along the last axis."""
    s = vals.shape[-1]
    k_lo, k_hi = int(round(0.02 * (s - 1))), int(round(0.98 * (s - 1)))
    part = np.partition(vals, [k_lo, k_hi], axis=-1)
    return part[..., k_lo], part[..., k_hi]


def block_mean(img: np.ndarray, valid: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Average ``[N, C, h, w]`` over ``f`` x ``f`` blocks, counting valid pixels only.

    Returns the float32 means and whether each block had a valid pixel.
    """
    if not valid.all():
        img = img * valid[:, None]
    total = _block_sum(img, f)
    count = _block_sum(valid, f)
    mean = total.astype(np.float32)
    mean /= np.maximum(count, 1).astype(np.float32)[:, None]
    return mean, count > 0


def _block_sum(x: np.ndarray, f: int) -> np.ndarray:
    """Sums of ``[..., h, w]`` over ``f`` x ``f`` blocks: rows first, then columns, each as
    ``f`` strided adds into an exact accumulator (integers stay integers)."""
    acc = _accumulator(x.dtype, f)
    rows: np.ndarray = x[..., 0::f, :].astype(acc)
    for i in range(1, f):
        rows += x[..., i::f, :]
    out = rows[..., 0::f].copy()
    for j in range(1, f):
        out += rows[..., j::f]
    return out


def _accumulator(dtype: np.dtype, f: int) -> type:
    """A type that holds the sum of ``f * f`` values of ``dtype`` exactly (floats: float32)."""
    if dtype.kind == "b" or (dtype.kind == "u" and dtype.itemsize == 1):
        return np.uint16 if f * f <= 257 else np.int64
    if dtype.kind in "ui":
        return np.int32 if dtype.itemsize <= 2 and f * f <= 32767 else np.int64
    return np.float32


def png_rgb8(pix: np.ndarray) -> list[bytes]:
    """8-bit RGB PNGs of ``pix`` ``[N, h, w, 3]`` (uint8), the Sub filter on every row."""
    n, h, w, _ = pix.shape
    rows = np.empty((n, h, 1 + 3 * w), dtype=np.uint8)
    rows[:, :, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel before
    line = pix.reshape(n, h, 3 * w)
    rows[:, :, 1:4] = line[:, :, :3]
    np.subtract(line[:, :, 3:], line[:, :, :-3], out=rows[:, :, 4:])
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    iend = _chunk(b"IEND", b"")
    return [
        b"".join([b"\x89PNG\r\n\x1a\n", ihdr, _chunk(b"IDAT", _deflate(r.tobytes())), iend])
        for r in rows
    ]


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _deflate(data: bytes) -> bytes:
    """A zlib stream of ``data``: ISA-L level 1, or zlib Huffman-only coding (no match search,
    after the Sub filter about as small as Pillow's level-1 PNG)."""
    if _fast_zlib is not None:
        return _fast_zlib.compress(data, 1)
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    return z.compress(data) + z.flush()
