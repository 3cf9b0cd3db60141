"""Appending chips to a store's LanceDB table: one commit per flush, never a duplicate id.

Rows are buffered and written with one ``table.add`` (one LanceDB version) per ``flush_rows``
rows, when ``flush_seconds`` have passed since the last commit, or at the end. Few, large
commits keep the table's fragments and versions few. A commit is atomic, so a process killed
at any moment leaves whole batches only; on the next run the ids already in the table are read
first and skipped.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from clay_search.errors import StoreMismatchError
from clay_search.schema import chips_schema, chips_table, rows_to_columns
from clay_search.store.layout import (
    StoreInfo,
    append_rows,
    check_normalisation,
    open_chips_table,
    open_or_create_store,
)
from clay_search.store.lock import StoreLock


class ChipWriter:
    """Buffered, idempotent writer of chip rows into ``<store>/lancedb`` table ``chips``."""

    def __init__(
        self,
        store_path,
        model_id: str,
        dim: int,
        patch_dim: int | None,
        *,
        flush_rows: int = 2048,
        flush_seconds: float = 30.0,
        normalisation: dict | None = None,
    ) -> None:
        self.info: StoreInfo = open_or_create_store(
            store_path, model_id, dim, patch_dim, normalisation=normalisation
        )
        self.lock = StoreLock(self.info.path, "ingest").acquire()  # released by close()
        try:
            self._open(patch_dim, dim, normalisation)
        except BaseException:  # a refused writer gives the lock back
            self.lock.release()
            raise
        self.dim = dim
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._last_commit = time.monotonic()
        self.model_id = model_id
        self.existing: set[str] = set(self._read_ids())
        self._rows: list[dict] = []
        self.written = 0
        self.commits = 0

    def _open(self, patch_dim: int | None, dim: int, normalisation: dict | None) -> None:
        """Open the table under the lock and check it takes these rows."""
        self.table = open_chips_table(self.info, create=True)
        # one normalisation policy per store (clay_search.store.layout.check_normalisation)
        warning = check_normalisation(
            self.info, normalisation, has_rows=self.table.count_rows() > 0
        )
        #: what the store said about its rows (an older store's unknown normalisation)
        self.notes: list[str] = [warning] if warning else []
        names = set(self.table.schema.names)
        self.has_patch_column = "patch_embeddings" in names
        if patch_dim and not self.has_patch_column:
            raise StoreMismatchError(
                f"store {self.info.path} was created without patch embeddings; write them to "
                "a new store (--store OTHER_PATH) or leave out --patch-embeddings"
            )
        if self.has_patch_column and patch_dim:
            field = self.table.schema.field("patch_embeddings")
            have = field.type.list_size
            if have != patch_dim:
                raise StoreMismatchError(
                    f"store {self.info.path} holds patch embeddings of size {have}, not "
                    f"{patch_dim}; use the store's chip size or a new store"
                )
        self.schema = chips_schema(
            dim,
            patch_dim=self.table.schema.field("patch_embeddings").type.list_size
            if self.has_patch_column
            else None,
        )
        # a store made before a column existed (e.g. place_id) keeps its own columns
        self.schema = pa.schema(
            [f for f in self.schema if f.name in names], metadata=self.schema.metadata
        )

    def _read_ids(self) -> list[str]:
        from clay_search.index.vectors import read_ids

        return read_ids(self.table).to_pylist()  # only the id column (not the embeddings)

    def __contains__(self, chip_id: str) -> bool:
        return chip_id in self.existing

    def add(self, row: dict) -> None:
        """Buffer one row (``embedding`` float32 [D], optional ``patch_embeddings``)."""
        if row["chip_id"] in self.existing:
            return
        self.existing.add(row["chip_id"])
        self._rows.append(row)
        if (
            len(self._rows) >= self.flush_rows
            or time.monotonic() - self._last_commit >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> int:
        """Write the buffered rows in one commit; returns how many."""
        if not self._rows:
            return 0
        rows, self._rows = self._rows, []
        self._last_commit = time.monotonic()
        cols: dict[str, Any] = rows_to_columns(rows, self.schema.names)  # + a scalar model_id
        cols["model_id"] = self.model_id
        table = chips_table(cols, self.schema)
        append_rows(self.info, self.table, table, what="an ingest commit")
        self.written += len(rows)
        self.commits += 1
        return len(rows)

    def close(self) -> None:
        """Give back the store's write lock (buffered rows must be flushed first)."""
        self.lock.release()

    @property
    def version(self) -> int:
        """The table version after the last commit."""
        return int(self.table.version)
