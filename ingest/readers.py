"""Open source readers shared by an ingest run's threads.

GDAL keeps decoded blocks per open dataset. A run reads a scene in many tasks (strips of chip
rows), and reopening the file for each task would decode every block row once per task that
touches it (eight times for 64 px chips in 512 px blocks). The pool keeps one open
:class:`SourceReader` per source, used by one thread at a time, so consecutive tasks (and the
normaliser's sample reads before them) hit the block cache instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from clay_search.ingest.raster import SourceReader
from clay_search.ingest.sources import Source

DEFAULT_MAX_OPEN = 8


class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reader: SourceReader | None = None
        self.users = 0


class ReaderPool:
    """Up to ``max_open`` open readers (least recently used closed first); thread-safe.

    ``nodata`` is passed to every :class:`SourceReader` (the run's ``--nodata``).
    """

    def __init__(self, max_open: int = DEFAULT_MAX_OPEN, *, nodata: float | None = None) -> None:
        self.max_open = max(1, max_open)
        self.nodata = nodata
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._guard = threading.Lock()

    @contextmanager
    def use(self, source: Source) -> Iterator[SourceReader]:
        """The open reader of ``source``, held by this thread until the block ends.

        A reader that fails to open is not kept; the error goes to the caller.
        """
        with self._guard:
            entry = self._entries.get(source.identity)
            if entry is None:
                entry = self._entries[source.identity] = _Entry()
            self._entries.move_to_end(source.identity)
            entry.users += 1
        try:
            with entry.lock:
                if entry.reader is None:
                    reader = SourceReader(source, nodata=self.nodata)
                    reader.open()
                    entry.reader = reader
                yield entry.reader
        finally:
            with self._guard:
                entry.users -= 1
                self._evict()

    def _evict(self) -> None:
        """Close idle readers beyond ``max_open`` (called under the guard)."""
        for key in list(self._entries):
            if len(self._entries) <= self.max_open:
                return
            entry = self._entries[key]
            if entry.users == 0:
                if entry.reader is not None:
                    entry.reader.close()
                del self._entries[key]

    def close(self) -> None:
        """Close every reader (the run is over)."""
        with self._guard:
            for entry in self._entries.values():
                if entry.reader is not None:
                    entry.reader.close()
            self._entries.clear()

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
