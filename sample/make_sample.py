"""Rebuild ``sample/`` from ``../shared/data`` (run from the repository root).

Copies 3 EuroSAT MS chips per class (band descriptions B01..B8A added, DEFLATE) and a
256 x 256 crop of the NAIP scene on two dates, keeping CRS and geotransform.
"""

from __future__ import annotations

from pathlib import Path

import rasterio
from rasterio.windows import Window

from clay_search.ingest.datasets import EUROSAT_MS_BANDS

SHARED = Path("../shared/data")
OUT = Path("sample")
EUROSAT_BANDS = list(EUROSAT_MS_BANDS)  # the band order of the EuroSAT MS files
PER_CLASS = 3
NAIP_DATES = ["20090818", "20200831"]
NAIP_WINDOW = Window(320, 240, 256, 256)


def copy_tif(
    src: Path, dst: Path, window: Window | None = None, descriptions: list[str] | None = None
) -> None:
    """Copy ``window`` of ``src`` to ``dst`` (tiled DEFLATE GeoTIFF, same CRS/grid)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src) as s:
        window = window or Window(0, 0, s.width, s.height)
        data = s.read(window=window)
        profile = s.profile.copy()
        profile.update(
            driver="GTiff",
            width=int(window.width),
            height=int(window.height),
            transform=s.window_transform(window),
            compress="deflate",
            predictor=2,
            tiled=False,
            photometric="MINISBLACK",
        )
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst, "w", **profile) as d:
            d.write(data)
            d.colorinterp = s.colorinterp  # keep "no colour meaning" (no alpha band)
            for i, name in enumerate(descriptions or []):
                d.set_band_description(i + 1, name)


def main() -> None:
    """Write the sample."""
    for cls_dir in sorted((SHARED / "eurosat_ms").iterdir()):
        for f in sorted(cls_dir.glob("*.tif"))[:PER_CLASS]:
            copy_tif(f, OUT / "eurosat_ms" / cls_dir.name / f.name, descriptions=EUROSAT_BANDS)
    for date in NAIP_DATES:
        name = f"m_4709963_se_14_1_{date}"
        copy_tif(
            SHARED / "opengeos" / "naip" / f"{name}.tif",
            OUT / "naip" / f"{name}_crop.tif",
            window=NAIP_WINDOW,
        )


if __name__ == "__main__":
    main()
