"""What several benchmarks share: the machine they ran on and this process's memory.

The scripts import it by name: ``python bench/X.py`` puts ``bench/`` first on ``sys.path``; a
script loaded otherwise (the tests load ``million.py`` from its file) puts it there itself.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``); None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """This process's resident memory now (``VmRSS``), MiB; NaN where /proc does not say."""
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``: touched pages of mapped files included;
    ``ru_maxrss`` where /proc does not say), MiB."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def machine() -> dict:
    """The CPU model, its count, the load average at the start and ``OMP_NUM_THREADS``."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
