"""Run manifests: ``<store>/runs/<run_id>.json`` (parameters, sources, counts, normalisation)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from clay_search.ingest.params import IngestParams
from clay_search.ingest.report import IngestReport, SourceReport
from clay_search.location import RemotePath, write_atomic


class RunManifest:
    """Written when a run starts (status ``running``) and rewritten when it ends."""

    def __init__(
        self,
        runs_dir: Path | RemotePath,
        params: IngestParams,
        model_id: str,
        precision: Callable[[], dict] | None = None,
        quality: Callable[[], dict] | None = None,
    ) -> None:
        now = datetime.now(UTC)
        # unique across processes and machines writing one store (e.g. on an object store)
        self.run_id = f"{now.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        runs_dir.mkdir(parents=True, exist_ok=True)
        self.path = runs_dir / f"{self.run_id}.json"
        self.started = now.isoformat(timespec="seconds")
        self.params = params
        self.model_id = model_id
        self.precision = precision  # the embedder's precision_report (auto: the calibration)
        self.quality = quality  # the embedder's quality_report (decoder found, masks)

    def save(
        self, report: IngestReport, sources: list[SourceReport], *, finished: bool = False
    ) -> None:
        """Write the manifest atomically."""
        data = {
            "run_id": self.run_id,
            "status": ("failed" if report.failed else "done") if finished else "running",
            "started": self.started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds") if finished else None,
            "model_id": self.model_id,
            "parameters": self.params.to_dict(),
            "precision": self.precision() if self.precision else None,
            "quality_score": self.quality() if self.quality and self.params.quality_score else None,
            "totals": {k: v for k, v in report.to_dict().items() if k != "sources_detail"},
            "sources": [asdict(s) for s in sources],
        }
        write_atomic(self.path, json.dumps(data, indent=2, default=str))
