"""Reading embeddings out of the chips table as normalised float32 matrices."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa


def embedding_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A ``[n, dim]`` float32 matrix from a fixed-size-list (or list) embedding column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    n = len(column)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if column.null_count:
        raise ValueError(f"{column.null_count} chips have no embedding")
    if column.offset:
        column = pa.concat_arrays([column])
    values = column.flatten() if hasattr(column, "flatten") else column.values
    mat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return mat.reshape(n, dim)


def l2_normalise(mat: np.ndarray, *, dtype: type = np.float32) -> np.ndarray:
    """Rows (last axis) scaled to unit length; zero rows stay zero. C-contiguous ``dtype``.

    The one L2 normalisation of the project (search, index, evaluation).
    """
    mat = np.ascontiguousarray(mat, dtype=dtype)
    norms = np.linalg.norm(mat, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(mat / norms, dtype=dtype)


def iter_vectors(
    table, dim: int, *, ids: list[pa.Array] | None = None, offset: int = 0
) -> Iterator[np.ndarray]:
    """The normalised embeddings of the rows from ``offset`` on, block by block in scan order,
    each ``[b, dim]`` float32 and normalised on its own; one block in memory at a time.
    ``ids``: a list that gets each block's chip ids."""
    query = table.search().select(["chip_id", "embedding"]).limit(None)
    if offset:
        query = query.offset(offset)
    for batch in query.to_batches():
        if batch.num_rows:
            if ids is not None:
                ids.append(batch.column("chip_id"))
            yield l2_normalise(embedding_matrix(batch.column("embedding"), dim))


def concat_ids(parts: list[pa.Array]) -> pa.Array:
    """One array of the chip ids :func:`iter_vectors` put in its ``ids`` list (none: empty)."""
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def read_ids_and_vectors(table, dim: int, *, offset: int = 0) -> tuple[pa.Array, np.ndarray]:
    """Chip ids and normalised embeddings of the rows from ``offset`` on, in scan order.

    Read batch by batch (:func:`iter_vectors`), so the peak is the ``[n, dim]`` float32
    result twice (the parts and their concatenation), not the whole Arrow column, its combined
    copy and the normalised copy at once (at 10^6 x 1,024: ~8 GB instead of ~12 GB).
    """
    ids: list[pa.Array] = []
    parts = list(iter_vectors(table, dim, ids=ids, offset=offset))
    if not parts:
        return concat_ids(ids), np.zeros((0, dim), dtype=np.float32)
    id_col = concat_ids(ids)
    ids.clear()
    mat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    parts.clear()
    return id_col, mat


def read_ids(table) -> pa.Array:
    """All chip ids in scan order (the one chip-id read: writers, importer, store)."""
    if table.count_rows() == 0:
        return pa.array([], pa.string())
    data = table.search().select(["chip_id"]).limit(None).to_arrow()
    return data.column("chip_id").combine_chunks()
