"""``clay-search search``: similar chips by example ids, a point, an image or a vector file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clay_search.cli.options import StoreOpt, WeightsOpt, handle_errors
from clay_search.errors import QueryError


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("search")(search)


def _floats(text: str | None, n: int, name: str) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError as e:
        raise QueryError(f"{name} must be {n} comma-separated numbers; got {text!r}") from e
    if len(vals) != n:
        raise QueryError(f"{name} must be {n} comma-separated numbers; got {text!r}")
    return vals


def write_results(results, out: Path, *, merge: bool = False) -> Path:
    """Write results by file extension: .geojson/.json, .parquet/.geoparquet, .csv."""
    suffix = out.suffix.lower()
    if suffix in {".geojson", ".json"}:
        return results.to_geojson(out, merge=merge)
    if suffix in {".parquet", ".geoparquet"}:
        return results.to_geoparquet(out, merge=merge)
    if suffix == ".csv":
        df = results.to_pandas().drop(columns=["geometry", "thumbnail"], errors="ignore")
        df.to_csv(out, index=False)
        return out
    raise QueryError(f"unknown output type {out.suffix!r}; use .geojson, .parquet or .csv")


@handle_errors
def search(
    store: StoreOpt,
    positive: Annotated[
        list[str] | None,
        typer.Option(
            "--positive", "-p", help="Chip id of an example to find more of (repeatable)."
        ),
    ] = None,
    negative: Annotated[
        list[str] | None,
        typer.Option("--negative", "-n", help="Chip id of a counter-example (repeatable)."),
    ] = None,
    point: Annotated[str | None, typer.Option(help="lon,lat: use the chip under it.")] = None,
    image: Annotated[Path | None, typer.Option(help="GeoTIFF/PNG to embed as the query.")] = None,
    bands: Annotated[
        str | None, typer.Option(help="Band names of --image, comma-separated.")
    ] = None,
    sensor: Annotated[str | None, typer.Option(help="Keep chips of this sensor only.")] = None,
    label: Annotated[str | None, typer.Option(help="Keep chips with this label only.")] = None,
    bbox: Annotated[str | None, typer.Option(help="minx,miny,maxx,maxy in degrees.")] = None,
    geometry: Annotated[
        Path | None, typer.Option(help="GeoJSON/WKT file: keep chips intersecting it.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="Earliest date (ISO, inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Latest date (ISO, inclusive).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results.")] = 50,
    out: Annotated[
        Path | None, typer.Option(help="Write results (.geojson, .parquet, .csv).")
    ] = None,
    merge: Annotated[
        bool, typer.Option(help="Merge touching hits into polygons in --out.")
    ] = False,
    version: Annotated[int | None, typer.Option(help="Search this table version.")] = None,
    weights: WeightsOpt = None,
) -> None:
    """Find chips like the positives and unlike the negatives, within the filters."""
    import clay_search

    st = clay_search.connect(store, version=version, weights=weights)
    filters = {
        "bbox": _floats(bbox, 4, "--bbox"),
        "geometry": geometry.read_text() if geometry else None,
        "start": start,
        "end": end,
        "sensor": sensor,
        "label": label,
    }
    if point:
        lon, lat = _floats(point, 2, "--point")
        res = st.search_point(lon, lat, k=k, **filters)
    elif image:
        band_list = [b.strip() for b in bands.split(",")] if bands else None
        res = st.search_image(image, k=k, bands=band_list, **filters)
    else:
        res = st.search(positive or [], negative or [], k=k, **filters)
    console = Console()
    t = Table(title=f"{len(res)} results (table version {res.version}, {res.meta.get('index')})")
    for col in ("rank", "score", "chip_id", "datetime", "label", "source"):
        t.add_column(col)
    df = res.to_pandas()
    for _, row in df.head(20).iterrows():
        t.add_row(
            str(row["rank"]),
            f"{row['score']:.4f}",
            str(row["chip_id"]),
            str(row["datetime"]),
            str(row["label"]),
            str(row["source"]),
        )
    console.print(t)
    if out:
        path = write_results(res, out, merge=merge)
        console.print(f"wrote {path}")
