"""What an ingest run did: per source and in total (printed by the CLI, saved in the manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SourceReport:
    """One source's outcome."""

    source: str
    kind: str = ""
    status: str = "ok"  # ok | failed
    error: str | None = None
    sensor: str | None = None
    bands: list[str] | None = None
    planned: int = 0  # chip windows
    existing: int = 0  # already in the store (skipped)
    written: int = 0
    nodata: int = 0  # skipped: too much nodata
    datetime: str | None = None  # ISO, UTC: the value stored (a year/month: its midpoint)
    datetime_precision: str | None = None  # year | month | day | time
    datetime_from: str | None = None  # where the date came from ("file name", "--dates F")
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    """Totals of a run; ``failed`` lists the sources that could not be ingested."""

    store: str
    model_id: str
    sources: int = 0
    chips_written: int = 0
    chips_existing: int = 0
    chips_nodata: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    workers: int | None = None  # reader threads the run used
    table_version: int | None = None
    index: dict | None = None
    manifest: str | None = None
    normalisers: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources_detail: list[SourceReport] = field(default_factory=list)

    @property
    def failed(self) -> list[SourceReport]:
        """Sources that failed, with their reasons."""
        return [s for s in self.sources_detail if s.status == "failed"]

    @property
    def ok(self) -> bool:
        """True when every source was ingested."""
        return not self.failed

    @property
    def chips_per_second(self) -> float:
        """Chips written per second of the whole run."""
        return self.chips_written / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """JSON-able form."""
        d = asdict(self)
        d["failed"] = len(self.failed)
        d["chips_per_second"] = round(self.chips_per_second, 2)
        return d
