"""The app's session state: labels (positive/negative chips), the current results, and history.

The functions take any mutable mapping (``st.session_state`` in the app, a dict in tests), so
the logic runs and is tested without a Streamlit server.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

POSITIVE = 1
NEGATIVE = -1

LABELS = "labels"  # dict[str, int]: chip id -> POSITIVE / NEGATIVE
RESULTS = "results"  # clay_search Results or None
RESULTS_DF = "results_df"  # RESULTS as a pandas DataFrame (with thumbnails) or None
QUERY = "query"  # short description of what produced RESULTS
ROUNDS = "rounds"  # list of dicts, one per search / refine round
PICKED = "picked"  # last chip picked on the map
NOTICE = "notice"  # (level, message) shown once after a callback
UPLOAD = "upload"  # validated UploadedChip or None
DRAWN = "drawn"  # GeoJSON Polygon drawn on the map, or None
VIEW = "view-bounds"  # (w, s, e, n) the map sent with "Use view", or None
MAP_EVENT = "map-event"  # key of the last map event handled

DEFAULTS: dict[str, Any] = {
    LABELS: dict,
    RESULTS: lambda: None,
    RESULTS_DF: lambda: None,
    QUERY: lambda: "",
    ROUNDS: list,
    PICKED: lambda: None,
    NOTICE: lambda: None,
    UPLOAD: lambda: None,
    DRAWN: lambda: None,
    VIEW: lambda: None,
    MAP_EVENT: lambda: None,
}


def init_state(ss: MutableMapping[str, Any]) -> None:
    """Give every key its default, leaving keys that already exist alone."""
    for key, make in DEFAULTS.items():
        if key not in ss:
            ss[key] = make()


def labels(ss: MutableMapping[str, Any]) -> dict[str, int]:
    """The labels dict (created if missing)."""
    if LABELS not in ss:
        ss[LABELS] = {}
    return ss[LABELS]


def set_label(ss: MutableMapping[str, Any], chip_id: str, value: int | None) -> None:
    """Label ``chip_id`` POSITIVE or NEGATIVE, or remove its label with ``None``."""
    lab = labels(ss)
    if value is None:
        lab.pop(chip_id, None)
    elif value in (POSITIVE, NEGATIVE):
        lab[chip_id] = value
    else:
        raise ValueError(f"a label is {POSITIVE} (positive) or {NEGATIVE} (negative), not {value}")


def toggle_label(ss: MutableMapping[str, Any], chip_id: str, value: int) -> int | None:
    """Set ``value`` on ``chip_id``, or clear it if the chip already has that label.

    Returns the chip's label afterwards (``None`` when cleared).
    """
    current = labels(ss).get(chip_id)
    new = None if current == value else value
    set_label(ss, chip_id, new)
    return new


def positives(ss: MutableMapping[str, Any]) -> list[str]:
    """Chip ids labelled positive, in the order they were labelled."""
    return [c for c, v in labels(ss).items() if v == POSITIVE]


def negatives(ss: MutableMapping[str, Any]) -> list[str]:
    """Chip ids labelled negative, in the order they were labelled."""
    return [c for c, v in labels(ss).items() if v == NEGATIVE]


def clear_labels(ss: MutableMapping[str, Any]) -> None:
    """Forget every label."""
    labels(ss).clear()


def record_round(
    ss: MutableMapping[str, Any],
    kind: str,
    count: int,
    seconds: float,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Append one search/refine round to the history (``extra``: classifier, CV metrics...)."""
    ss.setdefault(ROUNDS, []).append(
        {
            "round": len(ss.get(ROUNDS, [])) + 1,
            "kind": kind,
            "positives": len(positives(ss)),
            "negatives": len(negatives(ss)),
            "results": count,
            "seconds": round(seconds, 3),
            **(extra or {}),
        }
    )


def labels_json(ss: MutableMapping[str, Any], store_uri: str = "", version: Any = None) -> bytes:
    """The labels as a JSON document (positives, negatives, store, table version, time)."""
    doc = {
        "store": store_uri,
        "table_version": version,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "positives": positives(ss),
        "negatives": negatives(ss),
        "rounds": list(ss.get(ROUNDS, [])),
    }
    return json.dumps(doc, indent=2, default=str).encode()


def labels_csv(ss: MutableMapping[str, Any]) -> bytes:
    """The labels as CSV: ``chip_id,label`` with label ``positive`` or ``negative``."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["chip_id", "label"])
    for chip_id, v in labels(ss).items():
        w.writerow([chip_id, "positive" if v == POSITIVE else "negative"])
    return buf.getvalue().encode()


def parse_labels_json(data: bytes) -> dict[str, int]:
    """Read labels exported by :func:`labels_json` (to restore a session); ValueError if bad."""
    try:
        doc = json.loads(data)
        pos = [str(c) for c in doc.get("positives", [])]
        neg = [str(c) for c in doc.get("negatives", [])]
    except (json.JSONDecodeError, AttributeError, TypeError) as e:
        raise ValueError(f"not a clay-search labels file ({e})") from e
    out = dict.fromkeys(pos, POSITIVE)
    out.update(dict.fromkeys(neg, NEGATIVE))
    return out
