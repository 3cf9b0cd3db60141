"""Build the bad-input corpus (seeded, deterministic) and say what each entry must do.

``build(root, sample_dir)`` writes every entry under ``root`` and returns the :class:`Case` list.
Pixels come from the real NAIP crop shipped in ``sample/naip`` (public domain, USDA; see
sample/README.md) or from seeded random numbers; every georeferenced file has a real CRS. Files
that no library writes (a TIFF header declaring 2,048 x 1,073,741,824 px, a single 1 GiB tile)
are assembled byte by byte. See tests/corpus/README.md for the list and its provenance.

Run as a script to write the corpus to a folder: ``python tests/corpus/make_corpus.py OUT``.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAIP = "m_4709963_se_14_1_20200831_"  # NAIP product names tell the sensor and the date
GOOD = "sample/naip/m_4709963_se_14_1_20200831_crop.tif"


@dataclass
class Case:
    """One corpus entry: what to ingest and what must happen.

    ``expect`` is ``"ingested"`` (chips of it are written; ``chips`` of them when given) or
    ``"refused"`` (nothing of it is written). ``pattern`` is a regular expression the command's
    output must match (the message that says what is wrong with which file).
    """

    name: str
    args: list[str]  # ingest arguments (paths), relative to the corpus root
    expect: str
    pattern: str | None = None
    chips: int | None = None
    options: list[str] = field(default_factory=list)
    why: str = ""


def _naip(sample_dir: Path):
    import rasterio

    with rasterio.open(sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif") as src:
        return src.read(), src.profile


def _write(path: Path, data: np.ndarray, **profile) -> None:
    import rasterio

    prof = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype,
    }
    prof.update(profile)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)


def tiff_header(
    width: int,
    height: int,
    rows_per_strip: int,
    *,
    compression: int = 1,
    data: bytes = b"\0" * 8,
    spp: int = 1,
    tile: int | None = None,
    epsg: int | None = 32614,
    origin: tuple[float, float] = (500_000.0, 5_200_000.0),
    pixel: float = 10.0,
) -> bytes:
    """A little-endian classic TIFF of one strip (or one tile) holding ``data``, georeferenced in
    ``epsg`` (GeoTIFF tags) unless None: what the header declares is not checked against the
    bytes (that is the point)."""
    extra = bytearray()
    arrays: dict[int, tuple[int, int, int]] = {}  # tag -> (type, count, offset in extra)
    if epsg is not None:
        for tag, typ, fmt, vals in (
            (33550, 12, "<3d", (pixel, pixel, 0.0)),
            (33922, 12, "<6d", (0.0, 0.0, 0.0, origin[0], origin[1], 0.0)),
            (34735, 3, "<16H", (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg)),
        ):
            arrays[tag] = (typ, len(vals), len(extra))
            extra += struct.pack(fmt, *vals)
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, compression),
        (262, 3, 1, 1),
        (277, 3, 1, spp),
        (284, 3, 1, 1),
    ]
    if tile:
        entries += [(322, 4, 1, tile), (323, 4, 1, tile), (324, 4, 1, -1), (325, 4, 1, len(data))]
    else:
        entries += [(273, 4, 1, -1), (278, 4, 1, rows_per_strip), (279, 4, 1, len(data))]
    entries += [(tag, typ, count, -2) for tag, (typ, count, _) in arrays.items()]
    entries.sort()
    n = len(entries)
    extra_off = 8 + 2 + 12 * n + 4
    data_off = extra_off + len(extra)
    out = bytearray(b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", n))
    for tag, typ, count, val in entries:
        if val == -1:
            val = data_off
        elif val == -2:
            val = extra_off + arrays[tag][2]
            out += struct.pack("<HHII", tag, typ, count, val)
            continue
        if typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, val, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, val)
    out += struct.pack("<I", 0) + bytes(extra) + data
    return bytes(out)


def _stac_item(item_id: str, href: str) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {"datetime": "2020-08-31T00:00:00Z", "constellation": "naip"},
        "geometry": None,
        "links": [],
        "assets": {
            "image": {"href": href, "type": "image/tiff; application=geotiff", "roles": ["data"]}
        },
    }


def _catalog(cat_id: str, links: list[dict]) -> dict:
    return {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": cat_id,
        "description": f"corpus catalog {cat_id}",
        "links": links,
    }


def build(root: Path, sample_dir: Path) -> list[Case]:
    """Write the corpus under ``root``; the cases in a fixed order."""
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.transform import Affine

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(15)
    arr, prof = _naip(sample_dir)  # [4, 256, 256] uint8, EPSG:26914, nodata 0
    crs, tr = prof["crs"], prof["transform"]
    geo = {"crs": crs, "transform": tr}
    good_bytes = (sample_dir / "naip" / "m_4709963_se_14_1_20200831_crop.tif").read_bytes()
    cases: list[Case] = []

    def f(name: str) -> Path:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    unreadable = r"cannot be read as a raster"
    # -- broken files -----------------------------------------------------------------------
    f("zero_size.tif").write_bytes(b"")
    cases.append(Case("zero_size", ["zero_size.tif"], "refused", unreadable))
    f("wrong_magic.tif").write_bytes(b"GIF87a" + rng.bytes(2000))
    cases.append(Case("wrong_magic", ["wrong_magic.tif"], "refused", unreadable))
    f("header_only.tif").write_bytes(good_bytes[:64])
    cases.append(
        Case(
            "header_only",
            ["header_only.tif"],
            "refused",
            r"header_only\.tif.*(cannot be read|truncated or corrupt)",
        )
    )
    f(NAIP + "truncated.tif").write_bytes(good_bytes[: len(good_bytes) // 3])
    cases.append(
        Case(
            "truncated",
            [NAIP + "truncated.tif"],
            "refused",
            r"truncated\.tif.*truncated or corrupt",
        )
    )
    f("corrupt.tif").write_bytes(b"II*\x00" + rng.bytes(4000))
    cases.append(Case("corrupt", ["corrupt.tif"], "refused", unreadable))
    f("notes.tif").write_text("field notes, not an image\n")
    cases.append(Case("text_as_tif", ["notes.tif"], "refused", unreadable))
    f("page.tif").write_text("<!doctype html><html><body>404 Not Found</body></html>\n")
    cases.append(Case("html_as_tif", ["page.tif"], "refused", unreadable))
    f("table.tif").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    cases.append(Case("json_as_tif", ["table.tif"], "refused", r"table\.tif"))
    f("archive.tif").write_bytes(b"PK\x03\x04" + rng.bytes(500))
    cases.append(Case("zip_as_tif", ["archive.tif"], "refused", unreadable))

    # -- odd data types -----------------------------------------------------------------------
    amp = arr[:1].astype(np.float32)
    sar = (amp * np.exp(1j * rng.uniform(0, 2 * np.pi, amp.shape))).astype(np.complex64)
    _write(f("slc_complex64.tif"), sar, **geo)
    cases.append(
        Case(
            "complex64",
            ["slc_complex64.tif"],
            "refused",
            r"slc_complex64\.tif holds complex-valued samples \(complex64\)",
            options=["--sensor", "sentinel-1-rtc", "--bands", "vv"],
        )
    )
    ci16 = np.stack([arr[0].astype(np.int16), arr[1].astype(np.int16)])  # written as CInt16
    with rasterio.open(
        f("slc_cint16.tif"),
        "w",
        driver="GTiff",
        width=256,
        height=256,
        count=1,
        dtype="complex_int16",
        **geo,
    ) as dst:
        dst.write((ci16[0] + 1j * ci16[1]).astype(np.complex64)[None])
    cases.append(
        Case(
            "complex_int16",
            ["slc_cint16.tif"],
            "refused",
            r"slc_cint16\.tif holds complex-valued samples",
            options=["--sensor", "sentinel-1-rtc", "--bands", "vv"],
        )
    )
    for dt in (
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "int64",
        "uint64",
        "float32",
        "float64",
    ):
        data = (arr.astype(np.int64) // (2 if dt == "int8" else 1)).astype(dt)
        _write(f(f"{NAIP}{dt}.tif"), data, nodata=0, **geo)
        cases.append(Case(f"dtype_{dt}", [f"{NAIP}{dt}.tif"], "ingested", chips=16))

    # -- declared sizes -------------------------------------------------------------------------
    f("huge_strip.tif").write_bytes(tiff_header(2048, 1_073_741_824, 1_073_741_824))
    cases.append(
        Case(
            "huge_one_strip",
            ["huge_strip.tif"],
            "refused",
            r"huge_strip\.tif declares 2,048 x 1,073,741,824 px",
            why="a 142-byte file declaring 2 TiB in one strip (issue 15)",
        )
    )
    f("huge_scanlines.tif").write_bytes(
        tiff_header(2048, 1_073_741_824, 1, compression=8, data=zlib.compress(b"\0" * 4096))
    )
    cases.append(
        Case(
            "huge_dims_small_strips",
            ["huge_scanlines.tif"],
            "refused",
            r"huge_scanlines\.tif declares 2,048 x 1,073,741,824 px",
            options=["--sensor", "naip", "--bands", "red"],
            why="deflate scanlines: every block is small, the window list is not",
        )
    )
    f("one_strip_deflate.tif").write_bytes(
        tiff_header(20_000, 20_000, 20_000, compression=8, data=zlib.compress(b"\0" * 2**16))
    )
    cases.append(
        Case(
            "big_one_strip",
            ["one_strip_deflate.tif"],
            "refused",
            r"reading .*one_strip_deflate\.tif failed \((?!Read failed).*\); the file "
            r"may be truncated",
            options=["--sensor", "naip", "--bands", "red"],
            why="one deflate strip of 400 MB decoded: GDAL streams it by scanline "
            "(bounded memory); its data ends early",
        )
    )
    f("many_chips.tif").write_bytes(
        tiff_header(200_000, 200_000, 1, compression=8, data=zlib.compress(b"\0" * 4096))
    )
    cases.append(
        Case(
            "huge_dims_chip_count",
            ["many_chips.tif"],
            "refused",
            r"many_chips\.tif declares 200,000 x 200,000 px: 9,765,625 chips",
            options=["--sensor", "naip", "--bands", "red"],
            why="4e10 px is allowed, 9.8 million 64 px windows are not",
        )
    )
    f("huge_tile.tif").write_bytes(
        tiff_header(32768, 32768, 0, compression=8, data=zlib.compress(b"\0" * 2**20), tile=32768)
    )
    cases.append(
        Case(
            "bomb_one_tile",
            ["huge_tile.tif"],
            "refused",
            r"huge_tile\.tif is stored in blocks of 32768 x 32768 px",
            why="a decompression bomb: one deflate tile of 1 GiB zeros",
        )
    )
    bomb = np.full((1, 1024, 1024), 7, np.uint8)  # a deflate bomb that is a real, valid raster
    _write(
        f(NAIP + "bomb_constant.tif"),
        np.repeat(bomb, 4, 0),
        compress="deflate",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        crs=crs,
        transform=tr,
    )
    cases.append(
        Case(
            "bomb_constant_readable",
            [NAIP + "bomb_constant.tif"],
            "ingested",
            chips=16,
            options=["--chip-size", "256"],
            why="4 MiB of pixels per band in 5 KB, tiled: read window by window",
        )
    )

    # -- georeference ---------------------------------------------------------------------------
    rot = tr @ Affine.rotation(20)  # a rotated grid (a north-up raster turned by 20 degrees)
    _write(f(NAIP + "rotated.tif"), arr, nodata=0, crs=crs, transform=rot)
    cases.append(Case("rotated", [NAIP + "rotated.tif"], "ingested", chips=16))
    gcps = [
        GroundControlPoint(0, 0, tr.c, tr.f),
        GroundControlPoint(0, 256, tr.c + 1280, tr.f),
        GroundControlPoint(256, 0, tr.c, tr.f - 1280),
        GroundControlPoint(256, 256, tr.c + 1280, tr.f - 1280),
    ]
    with rasterio.open(
        f(NAIP + "gcps.tif"),
        "w",
        driver="GTiff",
        width=256,
        height=256,
        count=4,
        dtype="uint8",
        nodata=0,
    ) as dst:
        dst.write(arr)
        dst.gcps = (gcps, crs)
    cases.append(
        Case(
            "gcp_only",
            [NAIP + "gcps.tif"],
            "refused",
            r"gcps\.tif .*ground control points.*gdalwarp",
        )
    )
    _write(f(NAIP + "no_crs.tif"), arr, nodata=0)
    cases.append(Case("no_crs", [NAIP + "no_crs.tif"], "refused", r"no_crs\.tif has no CRS"))
    _write(f("png_chip.png"), arr[:3], driver="PNG")
    cases.append(
        Case(
            "png_without_crs",
            ["png_chip.png"],
            "ingested",
            chips=16,
            options=["--sensor", "naip", "--bands", "red,green,blue"],
        )
    )

    # -- values -------------------------------------------------------------------------------
    fl = arr.astype(np.float32)
    fl[:, :100, :] = np.nan
    fl[:, 100:110, :] = np.inf
    _write(f(NAIP + "nan_inf.tif"), fl, **geo)
    cases.append(
        Case(
            "nan_inf",
            [NAIP + "nan_inf.tif"],
            "ingested",
            chips=8,
            why="the NaN/inf rows are invalid pixels: their chips are skipped",
        )
    )
    _write(f(NAIP + "all_nan.tif"), np.full_like(fl, np.nan), **geo)
    cases.append(Case("all_nan", [NAIP + "all_nan.tif"], "refused", r"all_nan\.tif.*nodata"))
    _write(f(NAIP + "all_nodata.tif"), np.zeros_like(arr), nodata=0, **geo)
    cases.append(
        Case("all_nodata", [NAIP + "all_nodata.tif"], "refused", r"all_nodata\.tif.*nodata")
    )
    with rasterio.open(
        f(NAIP + "palette.tif"),
        "w",
        driver="GTiff",
        width=256,
        height=256,
        count=1,
        dtype="uint8",
        **geo,
    ) as dst:
        dst.write((arr[0] // 32)[None])
        dst.write_colormap(1, {i: (i * 30, 255 - i * 30, 0, 255) for i in range(8)})
    cases.append(
        Case(
            "palette",
            [NAIP + "palette.tif"],
            "refused",
            r"palette\.tif.*(palette|colour map|1 band)",
        )
    )

    # -- layouts and compressions --------------------------------------------------------------
    ovr = f(NAIP + "overviews.tif")
    _write(ovr, arr, nodata=0, **geo)
    with rasterio.open(ovr, "r+") as dst:
        dst.build_overviews([2, 4], rasterio.enums.Resampling.average)  # more IFDs in the file
    cases.append(
        Case("overviews", [ovr.name], "ingested", chips=16, why="the full-resolution page is read")
    )
    from PIL import Image

    pages = [
        Image.fromarray(np.ascontiguousarray(np.transpose(arr[:3, ::k, ::k], (1, 2, 0))))
        for k in (1, 2)
    ]
    pages[0].save(f(NAIP + "multipage.tif"), save_all=True, append_images=pages[1:], format="TIFF")
    cases.append(
        Case(
            "multipage_no_geotags",
            [NAIP + "multipage.tif"],
            "refused",
            r"multipage\.tif has no CRS",
            options=["--bands", "red,green,blue"],
            why="two pages written by Pillow (no GeoTIFF tags): the first is opened",
        )
    )
    comps = {
        "none": {},
        "deflate": {"compress": "deflate", "predictor": 2},
        "lzw": {"compress": "lzw"},
        "packbits": {"compress": "packbits"},
        "zstd": {"compress": "zstd"},
        "lzma": {"compress": "lzma"},
        "lerc": {"compress": "lerc"},
        "lerc_deflate": {"compress": "lerc_deflate"},
        "webp": {"compress": "webp", "webp_lossless": True},
        "jpeg": {"compress": "jpeg", "photometric": "ycbcr", "interleave": "pixel"},
        "tiled_deflate": {"compress": "deflate", "tiled": True, "blockxsize": 64, "blockysize": 64},
    }
    for name, co in comps.items():
        data = arr[:3] if name == "jpeg" else arr
        p = f(f"{NAIP}{name}.tif")
        try:
            _write(p, data, nodata=None if name in ("jpeg", "webp") else 0, **geo, **co)
        except Exception:  # noqa: BLE001 - a GDAL build without that codec: not in the corpus
            p.unlink(missing_ok=True)
            continue
        opts = ["--bands", "red,green,blue"] if name == "jpeg" else []
        cases.append(Case(f"compress_{name}", [p.name], "ingested", chips=16, options=opts))
    _write(f(NAIP + "cog.tif"), arr, driver="COG", nodata=0, blocksize=128, **geo)
    cases.append(Case("cog", [NAIP + "cog.tif"], "ingested", chips=16))
    try:
        _write(f(NAIP + "jp2.jp2"), arr, driver="JP2OpenJPEG", nodata=0, **geo)
        cases.append(Case("jpeg2000", [NAIP + "jp2.jp2"], "ingested", chips=16))
    except Exception:  # noqa: BLE001
        (root / (NAIP + "jp2.jp2")).unlink(missing_ok=True)
    vrt = f("vrt_raw.vrt")
    vrt.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64">'
        '<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
        '<SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset>"
        "</VRTRasterBand></VRTDataset>"
    )
    cases.append(
        Case(
            "vrt_raw_file",
            ["vrt_raw.vrt"],
            "refused",
            r"vrt_raw\.vrt is a GDAL VRT with raw bands",
            why="a VRT that reads another file's bytes as pixels",
        )
    )

    # -- STAC ---------------------------------------------------------------------------------
    good_tif = f("stac_data/" + NAIP + "stac.tif")
    good_tif.write_bytes(good_bytes)
    loop = root / "stac_loop"
    f("stac_loop/item/item.json").write_text(
        json.dumps(_stac_item("loop-item", "../../stac_data/" + good_tif.name))
    )
    (loop / "sub").mkdir(parents=True, exist_ok=True)
    (loop / "catalog.json").write_text(
        json.dumps(
            _catalog(
                "root",
                [
                    {"rel": "child", "href": "./sub/catalog.json"},
                    {"rel": "item", "href": "./item/item.json"},
                    {"rel": "child", "href": "./catalog.json"},
                ],
            )
        )
    )
    (loop / "sub" / "catalog.json").write_text(
        json.dumps(
            _catalog(
                "sub",
                [
                    {"rel": "child", "href": "../catalog.json"},
                    {"rel": "item", "href": "../item/item.json"},
                ],
            )
        )
    )
    cases.append(
        Case(
            "stac_link_cycle",
            ["stac_loop/catalog.json"],
            "ingested",
            chips=16,
            pattern=r"catalog\.json: its child link .* link cycle",
            why="children that link back: followed once, reported, item ingested",
        )
    )
    f("stac_missing/item.json").write_text(
        json.dumps(_stac_item("missing-asset", "./nowhere/missing.tif"))
    )
    cases.append(
        Case(
            "stac_missing_asset",
            ["stac_missing/item.json"],
            "refused",
            r"missing\.tif does not exist",
        )
    )
    f("stac_dotdot/item.json").write_text(
        json.dumps(_stac_item("dotdot-asset", "../stac_data/" + good_tif.name))
    )
    cases.append(
        Case(
            "stac_dotdot_href",
            ["stac_dotdot/item.json"],
            "ingested",
            chips=16,
            why="hrefs are resolved against their document and read where they point",
        )
    )
    f("stac_abs/item.json").write_text(json.dumps(_stac_item("abs-asset", "/etc/hostname")))
    cases.append(
        Case(
            "stac_absolute_href_not_raster",
            ["stac_abs/item.json"],
            "refused",
            r"/etc/hostname cannot be read as a raster",
        )
    )
    f("stac_missing_child/catalog.json").write_text(
        json.dumps(
            _catalog(
                "holes",
                [
                    {"rel": "child", "href": "./gone/catalog.json"},
                    {"rel": "item", "href": "../stac_dotdot/item.json"},
                ],
            )
        )
    )
    cases.append(
        Case(
            "stac_missing_child",
            ["stac_missing_child/catalog.json"],
            "ingested",
            chips=16,
            pattern=r"gone/catalog\.json not found.*child link",
        )
    )
    f("stac_deep.json").write_text("[" * 200_000 + "]" * 200_000)
    cases.append(
        Case(
            "stac_deeply_nested",
            ["stac_deep.json"],
            "refused",
            r"stac_deep\.json (nests too deeply|is not a readable STAC)",
        )
    )
    f("stac_garbage.json").write_text('{"type": "Feature", "stac_version": ')
    cases.append(
        Case(
            "stac_bad_json",
            ["stac_garbage.json"],
            "refused",
            r"stac_garbage\.json is not a readable STAC document",
        )
    )
    bad_wave = _stac_item("bad-wave", "../stac_data/" + good_tif.name)
    bad_wave["assets"]["image"]["eo:bands"] = [{"name": "red", "center_wavelength": [1, 2]}]
    f("stac_badfield/item.json").write_text(json.dumps(bad_wave))
    cases.append(
        Case(
            "stac_bad_field",
            ["stac_badfield/item.json"],
            "refused",
            r"bad-wave.*cannot be used: band red has center_wavelength \[1, 2\]",
        )
    )

    # -- folders ------------------------------------------------------------------------------
    d = root / "symlink_loop" / "scenes"
    d.mkdir(parents=True, exist_ok=True)
    (d / (NAIP + "linked.tif")).write_bytes(good_bytes)
    if not (d / "again").is_symlink():
        os.symlink("..", d / "again")
    if not (root / "symlink_loop" / "self").is_symlink():
        os.symlink(".", root / "symlink_loop" / "self")
    cases.append(
        Case(
            "symlink_loop",
            ["symlink_loop"],
            "ingested",
            chips=16,
            pattern=r"symlink_loop.*(already|loop)",
        )
    )
    return cases


if __name__ == "__main__":  # pragma: no cover - a helper for looking at the corpus
    here = Path(__file__).resolve().parents[2]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("corpus_out")
    for c in build(out, here / "sample"):
        print(f"{c.name:28s} {c.expect:9s} {' '.join(c.args)}")
