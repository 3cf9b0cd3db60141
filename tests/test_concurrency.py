"""Concurrent users of one store, real processes: readers during an ingest see whole commits and
an index that agrees with its table; two ingests (or two index syncs) at once never corrupt the
store; a full disk during a commit leaves the last good version; damaged store files are
detected, explained and repaired with ``clay-search index --rebuild``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gated_embedder import SCRIPT, wait_for
from test_faults import clay_geoparquet, table_state, temp_files

import clay_search
from clay_search.errors import StoreBusyError
from clay_search.store import check_index
from clay_search.store.lock import store_lock

pytestmark = pytest.mark.slow
FLUSH = 8
INGEST = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from clay_search.ingest import run
    r = run([sys.argv[1]], sys.argv[2], weights=sys.argv[3], chip_size=64, stride=32,
            batch_size=4, flush_rows={flush}, workers=1, precision="fp32")
    print("written", r.chips_written)
""").format(flush=FLUSH)
READER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import clay_search
    from clay_search.errors import StoreNotFoundError
    store, done, out = sys.argv[1], sys.argv[2], sys.argv[3]
    obs, errors = [], []
    while True:
        finished = os.path.exists(done)
        try:
            s = clay_search.connect(store)
        except StoreNotFoundError:
            if finished:
                break
            time.sleep(0.05)
            continue
        try:
            ids = s.attrs.column("chip_id").to_pylist()
            if ids:
                res = s.search([ids[0]], k=5)
                assert set(res.chip_ids) <= set(ids), "a result that is not in this version"
                assert len(set(ids)) == len(ids), "duplicate ids"
                emb = s.vectors
                assert emb.shape[0] == len(ids), "vectors disagree with the table"
                assert np.isfinite(emb).all()
            obs.append([int(s.version), len(ids), str(res.meta.get("index")) if ids else ""])
            with open(out + ".seen", "w") as f:  # what this reader has seen so far
                f.write(str(len(ids)))
        except Exception as e:  # the test fails on any
            errors.append(f"{type(e).__name__}: {e}")
        if finished:
            break
    json.dump({"obs": obs, "errors": errors}, open(out, "w"))
""")


def _py(code: str, *args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_dir, nano_weights):
    """An uninterrupted ingest of sample/naip with the settings used here."""
    store = tmp_path_factory.mktemp("conc") / "ref"
    p = _py(INGEST, sample_dir / "naip", store, nano_weights)
    _out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    return table_state(store)


def test_readers_during_an_ingest_see_whole_commits(tmp_path, sample_dir, nano_weights, reference):
    store, done = tmp_path / "s", tmp_path / "done"
    readers = [_py(READER, store, done, tmp_path / f"r{i}.json") for i in range(2)]
    gate = tmp_path / "gate"  # the writer waits there after 3 commits until both readers saw one
    kw = dict(chip_size=64, stride=32, batch_size=4, flush_rows=FLUSH, workers=1)
    args = (Path(__file__).parent, sample_dir / "naip", store, nano_weights, gate, 3 * FLUSH)
    writer = _py(SCRIPT.format(kw=repr(kw)), *args)
    seen_files = [tmp_path / f"r{i}.json.seen" for i in range(2)]

    def partial_seen() -> bool:
        return all(f.exists() and int(f.read_text() or 0) > 0 for f in seen_files)

    wait_for(partial_seen, "both readers to see a partial table", proc=writer)
    gate.touch()
    _, err = writer.communicate(timeout=600)
    done.write_text("1")
    assert writer.returncode == 0, err[-2000:]
    final = len(reference[0])
    seen = set()
    for i, r in enumerate(readers):
        _, rerr = r.communicate(timeout=600)
        assert r.returncode == 0, rerr[-2000:]
        got = json.loads((tmp_path / f"r{i}.json").read_text())
        assert got["errors"] == [], got["errors"][:3]
        for version, n, _ in got["obs"]:
            # a commit holds FLUSH rows (the last one the rest): never a part of a batch
            assert n % FLUSH == 0 or n == final, f"version {version} shows {n} rows"
            seen.add(n)
    assert len(seen) >= 2, f"the readers saw only {seen}: no read overlapped the ingest"
    assert table_state(store)[0] == reference[0]
    assert check_index(store).ok


def test_two_ingests_at_once_no_duplicates(tmp_path, sample_dir, nano_weights, reference):
    store = tmp_path / "s"
    a = _py(INGEST, sample_dir / "naip", store, nano_weights)
    b = _py(INGEST, sample_dir / "naip", store, nano_weights)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    rcs = [p.returncode for p in (a, b)]
    for rc, (_, err) in zip(rcs, outs, strict=True):
        if rc != 0:  # refused by the lock: a clear message, no corruption
            assert "StoreBusyError" in err and "is being written by ingest (pid" in err, err
    assert 0 in rcs
    ids, _emb, _ = table_state(store)
    assert len(set(ids)) == len(ids)
    assert ids == reference[0]
    assert check_index(store).ok
    assert temp_files(store) == []


def test_cli_second_writer_is_refused_with_one_line(tmp_path, sample_dir, nano_weights):
    from typer.testing import CliRunner

    from clay_search.cli.main import app

    store = tmp_path / "s"
    with store_lock(store, "ingest"):
        # another process holds the lock: this one is told, exit 2, nothing written
        code = textwrap.dedent("""
            import sys
            from typer.testing import CliRunner
            from clay_search.cli.main import app
            r = CliRunner().invoke(app, ["ingest", sys.argv[1], "--store", sys.argv[2],
                                         "--weights", sys.argv[3], "--quiet"])
            print(r.exit_code)
            print(r.output)
        """)
        p = _py(code, sample_dir / "naip", store, nano_weights)
        out, err = p.communicate(timeout=600)
    lines = out.splitlines()
    assert lines[0] == "2", out + err
    assert "is being written by ingest (pid" in out and "Traceback" not in out + err
    assert not (store / "lancedb").exists() or not list((store / "lancedb").iterdir())
    del CliRunner, app


#: A process that takes the store's write lock as "ingest", says "held" and keeps it.
HOLDER = textwrap.dedent("""
    import sys, time
    from clay_search.store.lock import store_lock
    store_lock(sys.argv[1], "ingest").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    store = tmp_path / "s"
    p = _py(HOLDER, store)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(StoreBusyError, match="is being written by ingest"):
        store_lock(store, "import").acquire()
    p.kill()
    p.wait()
    with store_lock(store, "import"):  # the kernel dropped the dead holder's lock
        pass


def test_next_writer_sweeps_a_dead_writers_temp_files(tmp_path):
    """A writer killed mid-write can leave the file it was staging (CI once found Lance's
    ``data/.tmpXXXX`` after a killed import): the next holder of the lock removes those, and
    keeps a ``<name>.<pid>.tmp`` whose process is alive."""
    store = tmp_path / "s"
    dead = _py("import os; print(os.getpid())")
    dead_pid = int(dead.communicate(timeout=60)[0])  # a pid no process has now
    planted = {
        "lancedb/chips.lance/data/.tmpLa7Bwy": True,
        "lancedb/chips.lance/_versions/.tmpQ1": True,
        "index/index-v3-abc.faiss.tmp": True,
        f"store.json.{dead_pid}.tmp": True,
        f"sessions/a.json.{os.getppid()}.tmp": False,  # alive: kept
        "lancedb/chips.lance/data/0a1b.lance": False,  # a real data file
        "notes.tmp": False,  # not a writer's staged file
    }
    for rel in planted:
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_bytes(b"x")
    holder = _py(HOLDER, store)
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()
    for rel, swept in planted.items():  # the holder swept (it took the lock first)
        assert (store / rel).exists() is not swept, rel
    (store / "lancedb/chips.lance/data/.tmpAgain").write_bytes(b"x")
    with _held_by_another(store), pytest.raises(StoreBusyError):  # refused: touches nothing
        store_lock(store, "import").acquire()
    assert (store / "lancedb/chips.lance/data/.tmpAgain").exists()
    with store_lock(store, "import"):
        assert not (store / "lancedb/chips.lance/data/.tmpAgain").exists()


@contextlib.contextmanager
def _held_by_another(store: Path):
    """The store's write lock held through a second open file (a rival holder)."""
    import fcntl

    fd = os.open(store / ".write.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def test_busy_message_names_a_holder_that_has_just_taken_the_lock(tmp_path):
    """The holder records itself an instant after it takes the lock; a writer refused in that
    instant still learns who holds it (CI once read the empty file and said "another process")."""
    import fcntl
    import threading

    store = tmp_path / "s"
    store.mkdir()
    lock_file = store / ".write.lock"
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)  # a second open file: a rival holder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        record = json.dumps({"pid": 4242, "purpose": "ingest", "since": "now"}).encode()
        late = threading.Timer(0.3, os.pwrite, (fd, record, 0))
        late.start()
        with pytest.raises(StoreBusyError, match=r"is being written by ingest \(pid 4242"):
            store_lock(store, "import").acquire()
        late.join()
    finally:
        os.close(fd)


def test_two_index_syncs_at_once_both_succeed(tmp_path):
    from clay_search.ingest.importer import import_geoparquet

    gpq = clay_geoparquet(tmp_path / "e.gpq", n=20_000)
    store = tmp_path / "s"
    import_geoparquet(gpq, store, model_id="clay-v1.5", sync=False)
    code = (
        "import sys; from clay_search.store import sync_index; "
        "print(sync_index(sys.argv[1], rebuild=True).action)"
    )
    procs = [_py(code, store) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    assert check_index(store).ok and temp_files(store) == []


@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs mounted for the test (skipped where mounting is not allowed)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root and mount(8)")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_commit_keeps_the_last_good_version(small_fs, tmp_path):
    from clay_search.ingest.importer import import_geoparquet

    store = small_fs / "s"
    small = clay_geoparquet(tmp_path / "small.gpq", n=2_000, dim=128, seed=1)
    big = clay_geoparquet(tmp_path / "big.gpq", n=60_000, dim=128, seed=2)  # ~31 MiB of floats
    import_geoparquet(small, store, model_id="clay-v1.5")
    before = table_state(store)
    version = clay_search.connect(store).version
    from clay_search.errors import StoreWriteError

    with pytest.raises(StoreWriteError) as e:
        import_geoparquet(big, store, model_id="clay-v1.5")
    msg = str(e.value)
    assert "the disk is full" in msg and "last good version" in msg and str(store) in msg, msg
    assert "cargo" not in msg and ".rs:" not in msg  # no raw internals
    s = clay_search.connect(store)
    assert s.version == version
    assert table_state(store)[0] == before[0]
    assert len(s.search([before[0][0]], k=3)) == 3
    assert check_index(store).ok


def _ingested_store(tmp_path, sample_dir, nano_weights) -> Path:
    store = tmp_path / "s"
    p = _py(INGEST, sample_dir / "naip", store, nano_weights)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    return store


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clay_search.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "400"},
    )


def test_corrupted_store_files_are_explained_and_repaired(tmp_path, sample_dir, nano_weights):
    store = _ingested_store(tmp_path, sample_dir, nano_weights)
    ids = table_state(store)[0]
    # 1. a truncated index file: detected; searches fall back to exact; --rebuild repairs
    meta = json.loads((store / "index" / "index.json").read_text())
    faiss_file = store / "index" / meta["files"]["index"]  # the current generation's data
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])
    assert not check_index(store).ok
    with pytest.warns(UserWarning, match="exact search"):
        res = clay_search.connect(store).search([ids[0]], k=3)
    assert len(res) == 3
    r = _cli("index", "--store", store, "--rebuild")
    assert r.returncode == 0, r.stdout + r.stderr
    assert check_index(store).ok
    # 2. a damaged store.json: one clear line (which file, what to do), exit 2, no traceback
    info = store / "store.json"
    good = info.read_text()
    info.write_text(good[: len(good) // 2])
    r = _cli("index", "--store", store, "--check")
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "store.json" in r.stdout + r.stderr
    info.write_text(good)
    # 3. a missing index manifest (index.json): the index is rebuilt on the next sync
    (store / "index" / "index.json").unlink()
    r = _cli("index", "--store", store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert check_index(store).ok and time.time()
