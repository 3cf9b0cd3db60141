"""Kill -9 trials: run a store write in a forked child, SIGKILL it after a seeded delay, resume it.

The heavy modules are imported once; every write runs in a fork (the parent never opens a store,
so no LanceDB or FAISS state is shared with the children). Usage:
``python tests/fault_runner.py SPEC.json RESULTS.json``. SPEC: ``{"ops": {name: {"kind":
"ingest"|"sync"|"import", ...}}, "trials": [{"op", "store", "frac"}]}``: each op first runs once
uninterrupted into ``ops[name]["reference_store"]`` (its time sets the kill delays; twice with
``warm_reference``, the second timed), then each
trial kills the op at ``frac`` of that time and runs it again to completion.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback


def _do(op: dict, store: str) -> None:
    kind = op["kind"]
    if kind == "ingest":
        from clay_search.ingest import run

        run(op["sources"], store, weights=op["weights"], **op.get("kwargs", {}))
    elif kind == "sync":
        from clay_search.store import sync_index

        sync_index(store, rebuild=True)
    elif kind == "import":
        from clay_search.ingest.importer import import_geoparquet

        import_geoparquet(op["file"], store, model_id=op["model_id"], sensor=op.get("sensor"))
    else:  # pragma: no cover
        raise ValueError(kind)


def _fork(op: dict, store: str) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        signal.alarm(300)  # a hung write ends the trial (reported as killed by SIGALRM)
        try:
            _do(op, store)
        except BaseException:  # noqa: BLE001 - reported through the exit status
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def main(spec_path: str, results_path: str) -> int:
    spec = json.loads(open(spec_path).read())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import rasterio  # noqa: F401 - imported once, before the forks (LanceDB is not: its
    import torch  # runtime is started in each child, never shared across a fork)

    import clay_search.model  # noqa: F401

    torch.set_num_threads(1)
    out = {"reference": {}, "trials": []}
    for name, op in spec["ops"].items():
        for _ in range(2 if op.get("warm_reference") else 1):  # a warm second run is timed
            t0 = time.perf_counter()
            _, st = os.waitpid(_fork(op, op["reference_store"]), 0)
            out["reference"][name] = {
                "rc": os.waitstatus_to_exitcode(st),
                "seconds": time.perf_counter() - t0,
            }
    for trial in spec["trials"]:
        op = spec["ops"][trial["op"]]
        delay = trial["frac"] * out["reference"][trial["op"]]["seconds"]
        pid = _fork(op, trial["store"])
        time.sleep(delay)
        killed = True
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            killed = False
        _, st = os.waitpid(pid, 0)
        first = os.waitstatus_to_exitcode(st)
        _, st = os.waitpid(_fork(op, trial["store"]), 0)
        out["trials"].append(
            {
                **trial,
                "delay_s": delay,
                "first_rc": first,
                "killed": killed and first == -signal.SIGKILL,
                "resume_rc": os.waitstatus_to_exitcode(st),
            }
        )
    with open(results_path, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
