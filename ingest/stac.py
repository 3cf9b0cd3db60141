"""STAC sources: a local (or online) Item, Catalog or Collection, or a STAC API search.

Asset links are resolved against the document that holds them. Per item, the data assets that
are rasters are used: several single-band assets make one band set (resampled to a common grid),
otherwise the first multi-band data asset is used. ``assets`` picks asset keys by name.
"""

from __future__ import annotations

import re
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
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, int | float | str):
        raise SourceReadError(
            f"band {_band_key(b) or '?'} has center_wavelength {w!r}, not a number (micrometres)"
        )
    try:
        return float(w)
    except ValueError as e:
        raise SourceReadError(
            f"band {_band_key(b) or '?'} has center_wavelength {w!r}, not a number (micrometres)"
        ) from e


def hint_text(item) -> str:
    """The text a sensor's ``stac`` hints (sensors.yaml) are searched in: platform,
    constellation, collection and item type."""
    props = item.properties
    parts = (
        props.get("platform"),
        props.get("constellation"),
        item.collection_id,
        props.get("pl:item_type"),
    )
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
            return [
                SourceFailure(
                    label,
                    SourceReadError(
                        f"item {item.id} has none of the assets {assets}; "
                        f"it has {sorted(item.assets)}"
                    ),
                )
            ]
    else:
        data = [
            k for k, a in item.assets.items() if _is_raster_asset(a) and "data" in (a.roles or [])
        ]
        if not data:
            data = [
                k
                for k, a in item.assets.items()
                if _is_raster_asset(a) and {"visual", "overview"} & set(a.roles or [])
            ]
        if not data:
            return [
                SourceFailure(
                    label,
                    SourceReadError(
                        f"item {item.id} has no raster data asset (assets: {sorted(item.assets)}); "
                        "pick one with --assets KEY"
                    ),
                )
            ]
        single = [k for k in data if len(_asset_bands(item, item.assets[k]) or []) == 1]
        if len(single) >= 2 and len(single) == len(data):
            keys = sorted(single)
        else:
            keys = [sorted(data, key=lambda k: (k not in _PREFERRED_KEYS, k))[0]]
    hrefs = [item.assets[k].get_absolute_href() or item.assets[k].href for k in keys]
    found: list[str] = []
    waves: list[float | None] = []
    complete = True
    for k in keys:
        bands = _asset_bands(item, item.assets[k])
        if bands:
            found.extend(_band_key(b) for b in bands)
            waves.extend(_band_wave(b) for b in bands)
        else:
            complete = False
            break
    band_keys: list[str] | None = found if complete else None
    if band_keys is None and len(keys) == 1:
        band_keys = _KNOWN_LAYOUTS.get(str(item.properties.get("pl:item_type")))
        waves = []
    if band_keys is not None and not all(band_keys):
        band_keys = None
    dt = item.datetime or item.common_metadata.start_datetime
    coll = item.collection_id or ""
    return [
        Source(
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
        )
    ]


def _read_stac(href: str):
    """A STAC object read from ``href`` (no link is resolved), or a clear error."""
    import pystac

    try:
        return pystac.read_file(href)
    except FileNotFoundError as e:
        raise SourceNotFoundError(f"STAC document {href} not found") from e
    except OSError as e:
        raise SourceNotFoundError(
            f"could not reach STAC document {href} ({e}); check the address or use a local copy"
        ) from e
    except RecursionError as e:
        raise SourceReadError(f"{href} nests too deeply to be a STAC document") from e
    except Exception as e:  # pystac raises many kinds for bad JSON
        raise SourceReadError(f"{href} is not a readable STAC document: {e}") from e


def _link_href(link, base: str) -> str:
    """The absolute href of ``link`` of the document at ``base`` (normalised, so a cycle through
    ``./a/../catalog.json`` is recognised)."""
    import posixpath

    from pystac.utils import make_absolute_href

    href = make_absolute_href(link.href, base)
    if re.match(r"^[a-z][a-z0-9+.-]*://", href, re.I):
        scheme, rest = href.split("://", 1)
        host, _, path = rest.partition("/")
        return f"{scheme}://{host}/{posixpath.normpath(path).lstrip('/')}"
    return str(Path(href).resolve())


def walk_catalog(href: str, root) -> tuple[list, list[SourceFailure]]:
    """The items under a Catalog/Collection ``root`` read from ``href``, each once.

    Child and item links are followed breadth-first without recursion; a link back to a document
    already read (a link cycle) is not followed again and is reported, with the document that
    holds it, as are children and items that cannot be read. The items found are kept.
    """
    import pystac

    seen = {_link_href(pystac.Link("self", href), href)}
    queue = [(href, root)]
    items: list = []
    failures: list[SourceFailure] = []
    while queue:
        base, cat = queue.pop(0)
        for link in cat.links:
            if link.rel not in ("child", "item"):
                continue
            target = _link_href(link, base)
            if target in seen:
                if link.rel == "child":
                    failures.append(
                        SourceFailure(
                            base,
                            SourceReadError(
                                f"{base}: its child link {link.href!r} leads back to {target}, "
                                "which was already read (a link cycle); it was followed once, "
                                "fix the link"
                            ),
                        )
                    )
                continue
            seen.add(target)
            try:
                obj = _read_stac(target)
            except (SourceNotFoundError, SourceReadError) as e:
                failures.append(
                    SourceFailure(
                        target, type(e)(f"{e} (the {link.rel} link {link.href!r} of {base})")
                    )
                )
                continue
            if isinstance(obj, pystac.Item):
                items.append(obj)
            elif isinstance(obj, pystac.Catalog):
                queue.append((target, obj))
    return items, failures


def stac_sources(href: str, assets: list[str] | None = None) -> list[Source | SourceFailure]:
    """Sources from a STAC Item, Catalog or Collection document (local path or URL).

    Catalogs are walked by :func:`walk_catalog` (link cycles and unreadable children are
    reported, the items found are used). Asset hrefs are resolved against their item and read
    where they point (a ``../`` or absolute href outside the catalog folder included).
    """
    import pystac

    obj = _read_stac(href)
    out: list[Source | SourceFailure] = []
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):  # Collection is a Catalog
        found, failures = walk_catalog(href, obj)
        out.extend(failures)
        unique = {(i.collection_id or "", i.id): i for i in found}
        items = [unique[k] for k in sorted(unique)]
    else:
        raise SourceReadError(f"{href} is a STAC {type(obj).__name__}, not an Item or Catalog")
    for item in items:
        try:
            out.extend(_item_sources(item, assets))
        except Exception as e:  # noqa: BLE001 - one bad item is reported, the others are used
            out.append(
                SourceFailure(
                    f"stac item {item.id}",
                    SourceReadError(
                        f"STAC item {item.id} ({item.get_self_href() or href}) cannot be used: {e}"
                    ),
                )
            )
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
    except Exception as e:  # network and API errors of every kind
        raise SourceNotFoundError(f"STAC API search at {url} failed: {e}") from e
    out: list[Source | SourceFailure] = []
    for item in sorted(items, key=lambda i: i.id):
        out.extend(_item_sources(item, assets))
    return out
