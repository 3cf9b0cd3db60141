"""The store's write lock: one writer at a time (ingest, import, index sync), readers never wait.

Writers take an exclusive ``fcntl.flock`` on ``<store>/.write.lock`` for as long as they write.
The kernel drops the lock when the process ends, however it ends (``kill -9`` included), so a
crashed writer never leaves a stale lock. The file also records who holds it (pid, what, since
when) for the message the next writer gets. Readers (search, the app) take no lock: LanceDB
versions and the index's ``index.json`` give them a consistent snapshot.

A writer killed mid-write leaves no partial commit (LanceDB's commits and the index's renames
are atomic) but can leave the temp file it was writing: Lance's ``.tmp*`` files in the table's
folders, the index's ``*.tmp``, and :func:`clay_search.location.write_atomic`'s
``<name>.<pid>.tmp``. Whoever takes the lock next holds it alone, so those files are a dead
writer's and it removes them (:func:`sweep_temp_files`); a ``<name>.<pid>.tmp`` of a process
still alive is kept (it may be a lock-free write of session files).

The lock is re-entrant within a process (an ingest that syncs the index at its end keeps the
lock it holds). It is advisory: it binds clay-search processes on one machine (and NFS clients
only where the server supports ``flock``). A store on an object store (``s3://...``) has no file
lock: there LanceDB's commit protocol orders the table's commits (a racing create of the table
is mended by ``clay_search.store.layout.open_chips_table``) and the index is written as
generations behind one atomic ``index.json`` (``clay_search.index.sync``), so two writers are
safe without it (``tests/test_store_s3.py``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from clay_search.errors import StoreBusyError, StoreWriteError

if TYPE_CHECKING:  # pragma: no cover
    from clay_search.location import RemotePath

LOCK_FILE = ".write.lock"
_POLL_S = 0.1

_held: dict[str, list] = {}  # lock path -> [fd, depth, purpose]
_guard = threading.RLock()


def _holder(path: Path, *, settle_s: float = 2.0) -> str:
    """Who holds the lock, as the holder recorded it.

    A writer records itself just after it takes the lock, so a file read in that instant is
    still empty: read again for up to ``settle_s`` before saying "another process".
    """
    deadline = time.monotonic() + settle_s
    while True:
        try:
            info = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if info or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    if not info:
        return "another process"
    return f"{info.get('purpose', 'a writer')} (pid {info.get('pid')}, since {info.get('since')})"


class StoreLock:
    """The write lock of the store at ``store``; ``purpose`` names the writer in messages.

    ``wait``: seconds to wait for another writer to finish before :class:`StoreBusyError`
    (0: refuse at once). Use as a context manager or with :meth:`acquire`/:meth:`release`.
    """

    def __init__(self, store: str | Path | RemotePath, purpose: str, *, wait: float = 0.0) -> None:
        from clay_search.location import RemotePath, is_remote, store_location

        self.remote = isinstance(store, RemotePath) or is_remote(store)
        # a remote store given as text was kept as a str (whose ``/`` fails): a RemotePath now
        self.store: Path | RemotePath = store_location(store) if self.remote else Path(str(store))
        self.path = Path(str(self.store)) / LOCK_FILE  # used for local stores only
        self.purpose = purpose
        self.wait = wait
        self._acquired = False

    def acquire(self) -> StoreLock:
        """Take the lock (or deepen this process's hold on it); a no-op on object stores."""
        if self.remote:
            return self
        key = str(self.path.resolve())
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._acquired = True
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            deadline = time.monotonic() + max(self.wait, 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        waited = f" after waiting {self.wait:.0f} s" if self.wait else ""
                        raise StoreBusyError(
                            f"store {self.store} is being written by {_holder(self.path)}"
                            f"{waited}; {self.purpose} needs it alone: wait for that to finish "
                            "and run it again (searches can go on meanwhile)"
                        ) from None
                    time.sleep(_POLL_S)
            record = json.dumps(
                {
                    "pid": os.getpid(),
                    "purpose": self.purpose,
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            ).encode()
            os.pwrite(fd, record, 0)  # one write, then cut what an older record left after it
            os.ftruncate(fd, len(record))
            _held[key] = [fd, 1, self.purpose]
            with suppress(OSError):  # a file it cannot remove stays; the writer goes on
                sweep_temp_files(self.path.parent)
            self._acquired = True
            return self

    def release(self) -> None:
        """Give the lock back (the outermost release unlocks)."""
        if self.remote or not self._acquired:
            return
        self._acquired = False
        key = str(self.path.resolve())
        with _guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
            fd = entry[0]
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _dead_writers_file(parts: tuple[str, ...]) -> bool:
    """Whether the store file at relative path ``parts`` is a temp file a dead writer left."""
    name = parts[-1]
    if name.startswith(".tmp"):
        return parts[0] == "lancedb"  # Lance's staged data, manifest or index file
    if not name.endswith(".tmp"):
        return False
    if parts[0] == "index":
        return True  # the index's own staged file (written under the lock)
    pid = name.rsplit(".", 2)[-2] if name.count(".") >= 2 else ""  # write_atomic's <name>.<pid>.tmp
    return pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))


def sweep_temp_files(store: str | Path) -> list[Path]:
    """Remove the temp files a crashed writer left in the local store ``store`` (see the module
    doc); call it holding the write lock. Returns what it removed."""
    root = Path(str(store))
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in root.rglob("*.tmp*"):
        if path.is_file() and _dead_writers_file(path.relative_to(root).parts):
            with suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def store_lock(store: str | Path | RemotePath, purpose: str, *, wait: float = 0.0) -> StoreLock:
    """A :class:`StoreLock` (``with store_lock(path, "ingest"): ...``)."""
    return StoreLock(store, purpose, wait=wait)


_NO_SPACE = (
    "no space left on device",
    "os error 28",
    "disk quota exceeded",
    "os error 122",
    "read-only file system",
    "os error 30",
)


@contextmanager
def guarded_write(
    store: str | Path | RemotePath, what: str, *, version: int | None = None
) -> Iterator[None]:
    """Turn a failed write of the filesystem (disk full, quota, read-only) into one clear
    :class:`StoreWriteError`; LanceDB's commits and the index's renames are atomic, so the store
    stays at its last good version (``version``, when known, is named in the message)."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        text = str(e).lower()
        codes = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
        if not (getattr(e, "errno", None) in codes or any(t in text for t in _NO_SPACE)):
            raise
        reason = (
            "the disk is full"
            if ("space" in text or "28" in text or getattr(e, "errno", None) == errno.ENOSPC)
            else "the filesystem refused the write (quota or read-only)"
        )
        at = f" (table version {version})" if version is not None else ""
        raise StoreWriteError(
            f"{what} in {store} failed: {reason} (no space left on device or similar); "
            f"nothing of it was committed and the store keeps its last good version{at}: free "
            "some space and run the same command again (it resumes)"
        ) from None
