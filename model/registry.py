"""Known checkpoints by name, and the cache folder they are downloaded into (no network here).

``weights_registry.yaml`` (beside this module) lists the checkpoints that
``clay-search weights fetch NAME`` downloads; ``$CLAY_SEARCH_WEIGHTS_REGISTRY`` may name a YAML or
JSON file of more entries (a mirror, a private checkpoint), which override bundled ones of the same
name. Downloads live in :func:`weights_cache_dir`. :func:`resolve_weights` turns a name given as
``--weights NAME`` into the cached file, or says how to get it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from clay_search.errors import CheckpointError, CheckpointNotFoundError
from clay_search.paths import HOME_ENV as HOME_ENV  # re-exported
from clay_search.paths import cache_dir

REGISTRY_ENV = "CLAY_SEARCH_WEIGHTS_REGISTRY"


def cache_home() -> Path:
    """clay-search's cache folder: ``$CLAY_SEARCH_HOME``, else ``$XDG_CACHE_HOME/clay-search``,
    else ``~/.cache/clay-search`` (:func:`clay_search.paths.cache_dir`). Not created here."""
    return cache_dir()


def weights_cache_dir() -> Path:
    """Where downloaded checkpoints live: ``<cache_home>/weights``."""
    return cache_home() / "weights"


@dataclass(frozen=True)
class KnownWeights:
    """One downloadable checkpoint."""

    name: str
    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    description: str = ""
    licence: str = ""
    dim: int | None = None

    def cached_path(self, to: str | Path | None = None) -> Path:
        """The file's place: ``to/filename`` or ``<weights cache>/<name>/<filename>``."""
        return (Path(to) if to else weights_cache_dir() / self.name) / self.filename


def _entries(data: object, origin: str) -> dict[str, KnownWeights]:
    if not isinstance(data, dict):
        raise CheckpointError(f"{origin}: a weights registry must map names to entries")
    out: dict[str, KnownWeights] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not entry.get("url") or not entry.get("filename"):
            raise CheckpointError(f"{origin}: entry {name!r} needs at least 'url' and 'filename'")
        sha = entry.get("sha256")
        if sha is not None and (len(str(sha)) != 64 or not _is_hex(str(sha))):
            raise CheckpointError(
                f"{origin}: entry {name!r} has a sha256 that is not 64 hex digits"
            )
        out[str(name)] = KnownWeights(
            name=str(name),
            url=str(entry["url"]),
            filename=str(entry["filename"]),
            sha256=str(sha).lower() if sha else None,
            size=int(entry["size"]) if entry.get("size") else None,
            description=str(entry.get("description", "")),
            licence=str(entry.get("licence", "")),
            dim=int(entry["dim"]) if entry.get("dim") else None,
        )
    return out


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def known_weights() -> dict[str, KnownWeights]:
    """Every known checkpoint by name (bundled registry, then ``$CLAY_SEARCH_WEIGHTS_REGISTRY``)."""
    bundled = resources.files("clay_search.model").joinpath("weights_registry.yaml")
    found = _entries(yaml.safe_load(bundled.read_text()), "weights_registry.yaml")
    extra = os.environ.get(REGISTRY_ENV, "").strip()
    if extra:
        path = Path(extra).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"${REGISTRY_ENV} names {path}, which does not exist; unset it or point it at a "
                "YAML/JSON file of weights entries"
            )
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise CheckpointError(f"{path}: not a readable weights registry ({e})") from None
        found.update(_entries(data, str(path)))
    return found


def get_known(name: str) -> KnownWeights:
    """The registry entry ``name`` (:class:`CheckpointNotFoundError` listing the known names)."""
    known = known_weights()
    if name not in known:
        raise CheckpointNotFoundError(
            f"no known weights named {name!r}; known: {', '.join(sorted(known)) or 'none'} "
            "(`clay-search weights list`), or pass a path to a weights file or folder"
        )
    return known[name]


def resolve_weights(value: str | Path) -> Path | None:
    """The cached file for a registry name given as ``--weights NAME``; ``None`` if ``value`` is
    no known name (then it is a path). A known name that is not downloaded yet raises
    :class:`CheckpointNotFoundError` saying how to get it."""
    text = str(value)
    if Path(text).exists():
        return None
    known = known_weights()
    if text not in known:
        return None
    entry = known[text]
    path = entry.cached_path()
    if path.is_file():
        return path
    raise CheckpointNotFoundError(
        f"weights {text!r} are not downloaded yet: run `clay-search weights fetch {text}` "
        f"(needs the network), or download {entry.url} elsewhere and put the file at {path}"
    )
