"""The parameters of an ingest run, checked once, and the error for bad options."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from clay_search.errors import IngestOptionError

__all__ = ["IngestOptionError", "IngestParams"]

DEFAULT_CHIP_SIZE = 64
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_NODATA = 0.5
DEFAULT_FLUSH_ROWS = 2048  # rows per commit, at most
DEFAULT_FLUSH_SECONDS = 30.0  # a commit at least this often while rows are waiting
THUMBNAIL_SIZE = 64


@dataclass
class IngestParams:
    """Everything that shapes which chips an ingest run makes and how they are embedded.

    ``chip_size`` and ``stride`` are in pixels of the source grid; ``bands`` names a file's bands
    in order (sensor common names or band ids); ``stats`` is ``auto`` (the sensor's statistics
    when the source's values fit them, else statistics computed from the source), ``sensor``,
    ``source`` or a JSON file path.
    """

    chip_size: int = DEFAULT_CHIP_SIZE
    stride: int | None = None
    sensor: str | None = None
    bands: list[str] | None = None
    datetime: datetime | None = None
    patch_embeddings: bool = False
    max_nodata: float = DEFAULT_MAX_NODATA
    nodata: float | None = None  # overrides the files' nodata value
    stats: str = "auto"
    assets: list[str] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int | None = None  # reader threads; None: auto_workers()
    flush_rows: int = DEFAULT_FLUSH_ROWS
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    fail_fast: bool = False
    extra: dict = field(default_factory=dict)

    def check(self, patch_size: int) -> None:
        """Raise :class:`IngestOptionError` for values that cannot work with the model."""
        if self.chip_size <= 0 or self.chip_size % patch_size:
            raise IngestOptionError(
                f"--chip-size {self.chip_size} must be a positive multiple of the model's patch "
                f"size {patch_size} (e.g. 64, 128 or 256)"
            )
        if self.stride is not None and self.stride <= 0:
            raise IngestOptionError(f"--stride {self.stride} must be a positive number of pixels")
        if not 0.0 <= self.max_nodata <= 1.0:
            raise IngestOptionError(f"--max-nodata {self.max_nodata} must be between 0 and 1")
        if self.batch_size < 1 or (self.workers is not None and self.workers < 0):
            raise IngestOptionError("--batch-size must be >= 1 and --workers >= 0")
        if self.flush_rows < 1 or self.flush_seconds <= 0:
            raise IngestOptionError("flush_rows must be >= 1 and flush_seconds > 0")
        if self.stats not in {"auto", "sensor", "source"} and not Path(self.stats).is_file():
            raise IngestOptionError(
                f"--stats {self.stats!r} must be auto, sensor, source or an existing JSON file "
                'mapping band names to {"mean": ..., "std": ...}'
            )

    def reader_threads(self, device) -> int:
        """``workers``, or when not set, :func:`auto_workers` for ``device``."""
        return self.workers if self.workers is not None else auto_workers(device)

    @property
    def step(self) -> int:
        """The stride in pixels (the chip size when not given)."""
        return self.stride or self.chip_size

    def to_dict(self) -> dict:
        """JSON-able form for the run manifest."""
        d = asdict(self)
        d["datetime"] = self.datetime.isoformat() if self.datetime else None
        return d


def auto_workers(device) -> int:
    """Reader threads that overlap reading with inference without slowing the model.

    With a GPU the model leaves the CPU free: 2 threads. On the CPU, torch's intra-op threads
    already use the cores it sees; readers only get the logical CPUs left over (0 on a 2-vCPU
    machine, where reading in between batches measured faster than reader threads competing
    with torch: see docs/benchmarks.md), at most 2.
    """
    import os

    import torch

    if str(getattr(device, "type", device)) != "cpu":
        return 2
    spare = (os.cpu_count() or 1) - torch.get_num_threads()
    return max(0, min(2, spare))
