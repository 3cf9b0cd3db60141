"""A seeded NAIP time series with a planted change, made from the shipped sample crop.

``make_series(folder)`` writes GeoTIFFs named like NAIP files (the date is read from the name):
five dates of the real 2009 crop (sample/naip, EPSG:26914, 5 m) with seeded sensor noise and
brightness jitter; on the two latest dates one 64 px chip cell (row 1, col 2) gets a planted
"construction": a bright roof block with dark edges. ``shifted=True`` adds one more date whose
grid is moved by 3 px (15 m): another grid, so other place ids, paired by footprint overlap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATES_BEFORE = ["20100615", "20110615", "20120615"]
DATES_AFTER = ["20190615", "20200615"]
CHANGED_CELL = (1, 2)  # (row, col) of 64 px chips
CHIP = 64


def make_series(
    folder: Path, sample_dir: Path, *, shifted: bool = False, seed: int = 0
) -> list[Path]:
    """Write the series into ``folder`` (created) and return the files."""
    import rasterio

    folder.mkdir(parents=True, exist_ok=True)
    src_path = sample_dir / "naip" / "m_4709963_se_14_1_20090818_crop.tif"
    with rasterio.open(src_path) as src:
        base = src.read().astype(np.float32)
        profile = src.profile
    rng = np.random.default_rng(seed)
    files = []
    r0, c0 = CHANGED_CELL[0] * CHIP, CHANGED_CELL[1] * CHIP
    dates = DATES_BEFORE + DATES_AFTER + (["20200716"] if shifted else [])
    for date in dates:
        img = base * rng.uniform(0.95, 1.05) + rng.normal(0, 3, base.shape)
        if date >= DATES_AFTER[0]:
            img[:, r0 + 8 : r0 + 56, c0 + 8 : c0 + 56] = 225.0  # a bright roof
            img[:, r0 + 8 : r0 + 12, c0 + 8 : c0 + 56] = 40.0  # its shadowed edge
            img[3, r0 + 8 : r0 + 56, c0 + 8 : c0 + 56] = 60.0  # no vegetation (NIR low)
        prof = dict(profile)
        name = f"m_4709963_se_14_1_{date}_synth.tif"
        if date == "20200716":
            t = prof["transform"]
            prof["transform"] = rasterio.Affine(t.a, t.b, t.c + 3 * t.a, t.d, t.e, t.f)
            img = np.concatenate([img[:, :, 3:], img[:, :, -3:]], axis=2)  # same ground
        out = folder / name
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(np.clip(img, 0, 255).astype(np.uint8))
        files.append(out)
    return files
