"""Downloading known checkpoints: the only code in clay-search that touches the network.

``fetch_weights(name)`` downloads a registry entry (``clay_search.model.registry``) into the
weights cache (or ``to=``), resuming a partial ``.part`` file with an HTTP ``Range`` request,
hashing as it goes, and moving the file into place only once its SHA-256 matches: the pinned digest
when the registry has one, else the digest the server advertises (Hugging Face's ``X-Linked-Etag``
is the Git LFS object id, the file's SHA-256). With neither, the download is refused unless
``allow_unverified=True``. The digest is recorded beside the file (``<file>.sha256``).

Offline, the first connection fails at once and the error says where to put a file downloaded
elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clay_search.errors import ChecksumError, DownloadError
from clay_search.model.registry import KnownWeights, get_known

CHUNK = 1 << 20
#: seconds to wait for a connection or a read before giving up (offline fails at once anyway)
TIMEOUT_S = 30.0

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_weights`` did."""

    name: str
    path: Path
    sha256: str
    size: int
    downloaded: int  # bytes transferred by this call (0 when the file was already there)
    resumed_from: int  # bytes of a partial file that were kept
    verified_against: str  # "pinned" | "server" | "unverified" | "cached"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _server_digest(headers) -> str | None:
    for key in ("X-Linked-Etag", "ETag"):
        value = headers.get(key)
        if value:
            text = value.strip().removeprefix("W/").strip('"').lower()
            if re.fullmatch(r"[0-9a-f]{64}", text):
                return text
    return None


def _offline_hint(entry: KnownWeights, dest: Path, err: object) -> str:
    return (
        f"could not download {entry.name} from {entry.url} ({err}). If this machine is offline, "
        f"download that file on another machine and put it at {dest} (or pass its path with "
        "--weights); run the command again to resume a partial download."
    )


def _open(url: str, start: int) -> urllib.response.addinfourl:
    req = urllib.request.Request(url, headers={"User-Agent": "clay-search"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)  # https/http registry URLs only


def fetch_weights(
    name: str,
    *,
    to: str | Path | None = None,
    url: str | None = None,
    allow_unverified: bool = False,
    progress: Progress | None = None,
) -> FetchResult:
    """Download the known checkpoint ``name`` (resumable, verified) and return where it is.

    ``to``: a folder instead of the cache; ``url``: a mirror of the same file (the pinned digest
    still applies). A file already in place with the right digest is not downloaded again.
    """
    entry = get_known(name)
    dest = entry.cached_path(to)
    digest_file = dest.with_name(dest.name + ".sha256")
    if dest.is_file():
        have = sha256_file(dest)
        if entry.sha256 is None or have == entry.sha256:
            return FetchResult(name, dest, have, dest.stat().st_size, 0, 0, "cached")
        dest.unlink()  # a file that is not the pinned one is never used
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    source = url or entry.url
    start = part.stat().st_size if part.is_file() else 0
    hasher = hashlib.sha256()
    try:
        resp = _open(source, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the partial file is already complete (or longer): restart
            part.unlink()
            return fetch_weights(
                name, to=to, url=url, allow_unverified=allow_unverified, progress=progress
            )
        raise DownloadError(_offline_hint(entry, dest, f"HTTP {e.code} {e.reason}")) from None
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(_offline_hint(entry, dest, reason)) from None
    with resp:
        status = getattr(resp, "status", 200)
        if start and status == 206:
            with part.open("rb") as fh:  # hash what is kept, then append
                while chunk := fh.read(CHUNK):
                    hasher.update(chunk)
            mode = "ab"
        else:
            start = 0  # the server ignored the range: start over
            mode = "wb"
        server_digest = _server_digest(resp.headers)
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else entry.size
        expected = entry.sha256 or server_digest
        if expected is None and not allow_unverified:
            raise ChecksumError(
                f"{entry.name}: neither the registry nor the server gives a SHA-256 to verify "
                f"{source} against; pin 'sha256' in the registry, or pass --allow-unverified"
            )
        free = shutil.disk_usage(dest.parent).free
        if total and total - start > free:
            raise DownloadError(
                f"not enough disk space in {dest.parent}: {entry.name} needs "
                f"{(total - start) / 1e9:.1f} GB, {free / 1e9:.1f} GB free; set "
                "$CLAY_SEARCH_HOME or pass --to DIR elsewhere"
            )
        done = start
        try:
            with part.open(mode) as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
        except (TimeoutError, OSError) as e:
            raise DownloadError(
                f"the download of {entry.name} broke off after {done:,} bytes ({e}); run the same "
                f"command again to resume from {part}"
            ) from None
    if total and done < total:
        raise DownloadError(
            f"the download of {entry.name} ended early ({done:,} of {total:,} bytes); run the "
            f"same command again to resume from {part}"
        )
    got = hasher.hexdigest()
    if expected is not None and got != expected:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{entry.name}: the downloaded file's SHA-256 is {got}, expected {expected} "
            f"({'pinned' if entry.sha256 else 'from the server'}); it was deleted. Try again; if "
            "it repeats, the mirror serves another file"
        )
    os.replace(part, dest)
    digest_file.write_text(json.dumps({"sha256": got, "url": source}) + "\n")
    how = "pinned" if entry.sha256 else ("server" if server_digest else "unverified")
    return FetchResult(name, dest, got, done, done - start, start, how)
