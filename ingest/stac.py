"""STAC sources: a local (or online) Item, Catalog or Collection, or a STAC API search.

Asset links are resolved against the document that holds them. Per item, the data assets that
are rasters are used: several single-band assets make one band set (resampled to a common grid),
otherwise the first multi-band data asset is used. ``assets`` picks asset keys by name.
"""

from __future__ import annotations

from pathlib import Path

from clay_search.errors import NetworkDisabledError, SourceNotFoundError, SourceReadError
from clay_search.ingest.sources import Source, SourceFailure

_RASTER_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2", "application/x-geotiff")
_PREFERRED_KEYS = ("analytic", "data", "image", "mosaic", "visual")

#: Band order of products whose assets carry no eo:bands (Planet's 4-band analytic: BGRN).
_KNOWN_LAYOUTS = {"PSScene4Band": ["blue", "green", "red", "nir"]}


def _is_raster_asset(asset) -> bool:
    mt = (asset.media_type or "").lower()
    href = asset.href.lower().split("?")[0]
    return mt.startswith(_RASTER_TYPES) or href.endswith((".tif", ".tiff", ".jp2"))


def _asset_bands(item, asset) -> list[dict] | None:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
    if not bands:
        bands = item.properties.get("eo:bands") if len(item.assets) == 1 else None
    return list(bands) if bands else None


def _band_key(b: dict) -> str:
    return str(b.get("common_name") or b.get("eo:common_name") or b.get("name") or "")


def _band_wave(b: dict) -> float | None:
    w = b.get("center_wavelength") or b.get("eo:center_wavelength")
    return float(w) if w is not None else None


def hint_text(item) -> str:
    """The text a sensor's ``stac`` hints (sensors.yaml) are searched in: platform,
    constellation, collection and item type."""
    props = item.properties
    parts = (props.get("platform"), props.get("constellation"), item.collection_id,
             props.get("pl:item_type"))
    return " ".join(str(p) for p in parts if p)


def _sensor_hint(item) -> str | None:
    """The shipped sensor the item's metadata names (the run re-reads :func:`hint_text` with
    its own registry, which may hold more sensors)."""
    from clay_search.model.sensors import SensorRegistry

    hit = SensorRegistry.default().from_hints("stac", [hint_text(item)])
    return hit[0].name if hit else None


def _item_sources(item, assets: list[str] | None) -> list[Source | SourceFailure]:
    label = f"stac item {item.id}"
    if assets:
        keys = [k for k in assets if k in item.assets]
        if not keys:
            return [SourceFailure(label, SourceReadError(
                f"item {item.id} has none of the assets {assets}; it has {sorted(item.assets)}"
            ))]
    else:
        data = [k for k, a in item.assets.items()
                if _is_raster_asset(a) and "data" in (a.roles or [])]
        if not data:
            data = [k for k, a in item.assets.items()
                    if _is_raster_asset(a) and {"visual", "overview"} & set(a.roles or [])]
        if not data:
            return [SourceFailure(label, SourceReadError(
                f"item {item.id} has no raster data asset (assets: {sorted(item.assets)}); "
                "pick one with --assets KEY"
            ))]
        single = [k for k in data if len(_asset_bands(item, item.assets[k]) or []) == 1]
        if len(single) >= 2 and len(single) == len(data):
            keys = sorted(single)
        else:
            keys = [sorted(data, key=lambda k: (k not in _PREFERRED_KEYS, k))[0]]
    hrefs = [item.assets[k].get_absolute_href() or item.assets[k].href for k in keys]
    band_keys: list[str] | None = []
    waves: list[float | None] = []
    for k in keys:
        bands = _asset_bands(item, item.assets[k])
        if bands:
            band_keys.extend(_band_key(b) for b in bands)
            waves.extend(_band_wave(b) for b in bands)
        else:
            band_keys = None
            break
    if band_keys is None and len(keys) == 1:
        band_keys = _KNOWN_LAYOUTS.get(str(item.properties.get("pl:item_type")))
        waves = []
    if band_keys is not None and not all(band_keys):
        band_keys = None
    dt = item.datetime or item.common_metadata.start_datetime
    coll = item.collection_id or ""
    return [Source(
        kind="stac",
        paths=hrefs,
        identity=f"stac:{coll}/{item.id}/{'+'.join(keys)}",
        display=hrefs[0] if len(hrefs) == 1 else f"{item.id}:{'+'.join(keys)}",
        band_keys=band_keys,
        item_id=item.id,
        datetime=dt,
        sensor_hint=_sensor_hint(item),
        stac_text=hint_text(item),
        name_parts=[item.id, *[Path(h).stem for h in hrefs]],
        stats_group=f"stac:{coll}/{item.id}/{'+'.join(keys)}",
        wavelengths=waves if waves and any(w is not None for w in waves) else None,
    )]


def stac_sources(href: str, assets: list[str] | None = None) -> list[Source | SourceFailure]:
    """Sources from a STAC Item, Catalog or Collection document (local path or URL)."""
    import pystac

    try:
        obj = pystac.read_file(href)
    except FileNotFoundError as e:
        raise SourceNotFoundError(f"STAC document {href} not found") from e
    except OSError as e:
        raise SourceNotFoundError(
            f"could not reach STAC document {href} ({e}); check the address or use a local copy"
        ) from e
    except Exception as e:  # noqa: BLE001 - pystac raises many kinds for bad JSON
        raise SourceReadError(f"{href} is not a readable STAC document: {e}") from e
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
        items = sorted(obj.get_items(recursive=True), key=lambda i: (i.collection_id or "", i.id))
    else:
        raise SourceReadError(f"{href} is a STAC {type(obj).__name__}, not an Item or Catalog")
    out: list[Source | SourceFailure] = []
    for item in items:
        out.extend(_item_sources(item, assets))
    return out


def stac_search_sources(
    url: str,
    *,
    collections: list[str],
    bbox: list[float] | None = None,
    datetime: str | None = None,
    max_items: int = 100,
    assets: list[str] | None = None,
) -> list[Source | SourceFailure]:
    """Sources from a STAC API search (network; needs the ``stac-api`` extra)."""
    try:
        from pystac_client import Client
    except ImportError as e:
        raise NetworkDisabledError(
            "STAC API search needs pystac-client: pip install 'clay-search[stac-api]'"
        ) from e
    try:
        client = Client.open(url)
        search = client.search(
            collections=collections, bbox=bbox, datetime=datetime, max_items=max_items
        )
        items = list(search.items())
    except Exception as e:  # noqa: BLE001 - network and API errors of every kind
        raise SourceNotFoundError(f"STAC API search at {url} failed: {e}") from e
    out: list[Source | SourceFailure] = []
    for item in sorted(items, key=lambda i: i.id):
        out.extend(_item_sources(item, assets))
    return out
