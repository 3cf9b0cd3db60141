"""Where clay-search keeps per-user files (calibrations, downloaded weights).

One folder, chosen once: ``$CLAY_SEARCH_HOME`` if set, else ``$XDG_CACHE_HOME/clay-search``, else
``~/.cache/clay-search``. Everything in it can be deleted at any time; it is rebuilt on demand.
Nothing is created until a writer asks for it (``create=True``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the cache folder.
HOME_ENV = "CLAY_SEARCH_HOME"


def cache_dir(*parts: str, create: bool = False) -> Path:
    """The user's clay-search cache folder, or a sub-folder of it (``cache_dir("calibration")``).

    ``create=True`` makes the folder (and its parents) when it does not exist yet.
    """
    home = os.environ.get(HOME_ENV, "").strip()
    if home:
        base = Path(home).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "clay-search"
    path = base.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
