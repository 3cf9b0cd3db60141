"""An embedder that stops after some chips until a gate file exists (Ray worker tests).

It lives in its own module so that Ray's worker processes can import it (the test puts this
folder on their ``PYTHONPATH``): the engine ships the embedder to its actor with ``pickle``.
A run with it cannot finish before the test has done what it waits to do (kill a worker),
however fast the machine is.
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

    def embed_raw(self, raw: Any, *args: Any, **kwargs: Any):  # noqa: ANN201 - Embedder's
        if GatedEmbedder._done >= self.free_chips and not self.gate.exists():
            self.waiting.touch()
            deadline = time.monotonic() + 600
            while not self.gate.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        GatedEmbedder._done += len(raw)
        return super().embed_raw(raw, *args, **kwargs)
