"""Run ``clay-search ingest`` on each corpus case in its own process, with bounded memory and time.

The heavy modules (torch, rasterio, LanceDB, clay-search) are imported once here, then every case
runs in a forked child with ``RLIMIT_AS`` (address space) and an alarm set, its stdout/stderr in
files. The parent never opens a store, so nothing it holds is shared with the children.

Usage: ``python tests/corpus/runner.py SPEC.json RESULTS.json``. SPEC: ``{"weights", "timeout_s",
"mem_extra_bytes", "cases": [{"name", "argv", "out"}]}``; RESULTS: per case ``rc`` (negative: the
signal that ended it), ``seconds``, ``maxrss_bytes`` and the output file paths.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(argv: list[str], out: str, limit: int, timeout_s: int) -> None:
    """Run the CLI in this (forked) process and leave with its exit status."""
    code = 70
    try:
        fd_out = os.open(out + ".stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fd_err = os.open(out + ".stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.alarm(timeout_s)  # SIGALRM ends a case that runs too long
        from clay_search.cli.main import app

        try:
            app(args=argv, standalone_mode=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - anything escaping the CLI is what the test looks for
        traceback.print_exc()
        code = 70
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(spec_path: str, results_path: str) -> int:
    spec = json.loads(open(spec_path).read())
    os.environ["COLUMNS"] = "400"  # rich wraps at the terminal width: keep each message on a line
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import lancedb  # noqa: F401 - imported once, before the forks
    import rasterio  # noqa: F401
    import torch

    import clay_search.cli.main
    import clay_search.ingest
    import clay_search.model  # noqa: F401

    torch.set_num_threads(1)
    base = _vm_bytes()
    limit = base + int(spec.get("mem_extra_bytes", 3 * 2**30))
    results = {
        "base_vm_bytes": base,
        "limit_bytes": limit,
        "base_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cases": {},
    }
    for case in spec["cases"]:
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _child(case["argv"], case["out"], limit, int(spec.get("timeout_s", 120)))
        _, status, usage = os.wait4(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        results["cases"][case["name"]] = {
            "rc": rc,
            "seconds": time.perf_counter() - t0,
            "maxrss_bytes": usage.ru_maxrss * 1024,
            "stdout": case["out"] + ".stdout",
            "stderr": case["out"] + ".stderr",
        }
    with open(results_path, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
