"""An embedder that stops after some chips until a gate file exists (tests that act mid-run).

A run with it cannot finish before the test has done what it waits to do (kill the writer or
a Ray worker, let readers look at a partial store), however fast the machine is. It lives in
its own module so that other processes can import it: Ray's workers (the test puts this folder
on their ``PYTHONPATH``; the engine ships the embedder with ``pickle``) and the ingest
subprocesses of the kill tests (:data:`SCRIPT`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from clay_search.model import Embedder


class GatedEmbedder(Embedder):
    """Embeds ``free_chips`` chips per process, then waits for ``gate`` to exist.

    While it waits, the file :attr:`waiting` exists (the test's cue that a run is mid-way).
    """

    gate: Path
    free_chips: int
    _done = 0  # chips embedded by this process (a restarted actor counts afresh)

    @classmethod
    def wrap(cls, embedder: Embedder, gate: Path, *, free_chips: int) -> GatedEmbedder:
        """A copy of ``embedder`` (same weights and settings) that waits at ``gate``."""
        gated = cls.__new__(cls)
        gated.__dict__.update(embedder.__dict__)
        gated.gate, gated.free_chips = Path(gate), free_chips
        return gated

    @property
    def waiting(self) -> Path:
        """The file that says a process is waiting at the gate."""
        return self.gate.with_name(self.gate.name + ".waiting")

    def embed_raw(self, raw: Any, *args: Any, **kwargs: Any):
        if GatedEmbedder._done >= self.free_chips and not self.gate.exists():
            self.waiting.touch()
            deadline = time.monotonic() + 600
            while not self.gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        GatedEmbedder._done += len(raw)
        return super().embed_raw(raw, *args, **kwargs)


# An ingest in a subprocess whose embedder waits at a gate: argv = tests folder, source, store,
# weights, gate, free chips; the run's keywords are formatted in as ``{kw}``.
SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from gated_embedder import GatedEmbedder
from clay_search.ingest import run
from clay_search.model import Embedder
embedder = GatedEmbedder.wrap(
    Embedder.from_weights(sys.argv[4], precision="fp32"), sys.argv[5], free_chips=int(sys.argv[6])
)
r = run([sys.argv[2]], sys.argv[3], embedder=embedder, **{kw})
print("written", r.chips_written)
"""


def wait_for(predicate: Any, what: str, *, timeout: float = 300, proc: Any = None) -> None:
    """Poll ``predicate()`` until true; fail with ``what`` after ``timeout`` s or when ``proc``
    (a Popen) has ended first."""
    import pytest

    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            err = err.decode() if isinstance(err, bytes) else err
            pytest.fail(f"the process ended before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def table_rows(store: Any) -> int:
    """Rows of the chips table of ``store`` (a local path or an object-store URI); 0 before
    the table exists."""
    from clay_search.location import connect_lancedb, store_location

    try:
        return connect_lancedb(store_location(store) / "lancedb").open_table("chips").count_rows()
    except Exception:  # noqa: BLE001 - the table may not exist yet
        return 0
