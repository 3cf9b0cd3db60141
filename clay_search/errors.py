"""Every error clay-search raises on purpose.

One root, :class:`ClaySearchError`; each subclass also inherits the builtin that fits, so
``except FileNotFoundError`` and ``except ValueError`` keep working. Messages say what was wrong
and what to do about it.
"""

from __future__ import annotations


class ClaySearchError(Exception):
    """Root of all clay-search errors."""


class SourceNotFoundError(ClaySearchError, FileNotFoundError):
    """An input file, folder, STAC document or asset does not exist or cannot be reached."""


class SourceReadError(ClaySearchError, OSError):
    """A source exists but cannot be read as imagery (corrupt, truncated, not a raster)."""


class MissingCRSError(ClaySearchError, ValueError):
    """A georeferenced workflow met a raster without a CRS."""


class UnknownSensorError(ClaySearchError, ValueError):
    """A sensor name that the sensor metadata does not know."""


class BandMismatchError(ClaySearchError, ValueError):
    """Bands that cannot be mapped onto a sensor (wrong count, unknown names)."""


class NoDataError(ClaySearchError, ValueError):
    """A source or chip holds only nodata."""


class IngestOptionError(ClaySearchError, ValueError):
    """An ingest option with a value that cannot work (chip size, stride, stats, ...)."""


class CheckpointError(ClaySearchError, ValueError):
    """Weights that cannot be loaded: wrong format, mismatched keys or shapes."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A weights file that does not exist (or a known name not fetched yet)."""


class ModelConfigError(ClaySearchError, ValueError):
    """Model sizes or inputs the encoder cannot take (unknown size, chip not a patch multiple)."""


class EmbedderOptionError(ClaySearchError, ValueError):
    """An Embedder option that cannot work (pooling, precision, standardisation)."""


class PrecisionUnavailableError(EmbedderOptionError):
    """A forced precision this device or torch build cannot run (say which one can)."""


class StoreNotFoundError(ClaySearchError, FileNotFoundError):
    """No store (or no chips table) at the given path."""


class StoreMismatchError(ClaySearchError, ValueError):
    """Embeddings from another model (or of another dimension) than the store holds."""


class UnknownChipError(ClaySearchError, KeyError):
    """A chip id that is not in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class QueryError(ClaySearchError, ValueError):
    """A search request that cannot be answered as given (no positives, bad bbox, ...)."""


class IndexStaleError(ClaySearchError, RuntimeError):
    """A vector index that does not match the table version."""


class UploadError(ClaySearchError, ValueError):
    """A file uploaded in the app that cannot be used as a query chip (format, size, content)."""


class NetworkDisabledError(ClaySearchError, ConnectionError):
    """An operation would need the network; give a local file instead."""


class InvalidDateError(QueryError, IngestOptionError):
    """A date or time that cannot be read (see :mod:`clay_search.dates`).

    One type for every date a user or a file gives: it is a :class:`QueryError` for filter
    bounds and an :class:`IngestOptionError` for ingest options, so either ``except`` catches it.
    """


class AmbiguousChipError(UnknownChipError):
    """A chip id prefix that matches more than one chip."""


class DependencyError(ClaySearchError, RuntimeError):
    """A required package, extension or file of the installation is missing or broken."""


class DownloadError(ClaySearchError, ConnectionError):
    """A download (``clay-search weights fetch``) that could not complete; the partial file is
    kept so that the next try resumes."""


class ChecksumError(ClaySearchError, ValueError):
    """A downloaded file whose SHA-256 is not the one expected; it is deleted, never used."""


class ImportFormatError(ClaySearchError, ValueError):
    """An embeddings file whose layout cannot be read (no embedding column, unknown encoding)."""


class CRSContradictionError(ClaySearchError, ValueError):
    """A file whose coordinates contradict the CRS it declares (override with ``--crs``)."""


class BadRowsError(ClaySearchError, ValueError):
    """Rows with missing or malformed embeddings where all-or-nothing (``--strict``) was asked."""


class TrainingDataError(ClaySearchError, ValueError):
    """Labelled data that cannot train a task: one class, masks of another size than their
    image, class values outside the task's classes, targets that match no chip."""


class HeadError(ClaySearchError, ValueError):
    """A task head folder that cannot be loaded (missing or corrupt files, wrong format), or a
    head applied to imagery it was not trained for (other bands, another sensor)."""
