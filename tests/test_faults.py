"""Faults: kill -9 at seeded random points of ingest, index sync and import (28 trials), then
resume; the table equals an uninterrupted run, the index matches the table, no temp files are
left and no chip id is stored twice. The writes run in forks of tests/fault_runner.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest
import shapely

pytestmark = pytest.mark.slow

SEED = 15
N_INGEST, N_SYNC, N_IMPORT = 12, 8, 8
INGEST_KW = {
    "chip_size": 64,
    "stride": 32,
    "batch_size": 4,
    "flush_rows": 8,
    "workers": 1,
    "precision": "fp32",
}


def clay_geoparquet(path: Path, n: int = 20_000, dim: int = 128, seed: int = SEED) -> Path:
    """A Clay-format embeddings GeoParquet (source_url, date, embeddings, geometry), seeded."""
    import geopandas as gpd

    rng = np.random.default_rng(seed)
    lon = rng.uniform(-10, 10, n)
    lat = rng.uniform(40, 50, n)
    geoms = shapely.box(lon, lat, lon + 0.01, lat + 0.01)
    gdf = gpd.GeoDataFrame(
        {
            "source_url": [f"s3://bucket/tile_{i // 100}.tif" for i in range(n)],
            "date": pa.array(rng.integers(17_000, 19_000, n).astype("datetime64[D]")).to_pylist(),
            "embeddings": list(rng.standard_normal((n, dim)).astype(np.float32)),
        },
        geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"),
    )
    gdf.to_parquet(path)
    return path


def table_state(store: Path) -> tuple[list[str], np.ndarray, list]:
    """Chip ids (sorted), their embeddings and geometries: what a resumed run must reproduce."""
    t = lancedb.connect(str(store / "lancedb")).open_table("chips").to_arrow()
    ids = t.column("chip_id").to_pylist()
    order = np.argsort(np.array(ids, dtype=object))
    emb = np.stack(t.column("embedding").to_numpy(zero_copy_only=False))[order]
    geom = [t.column("geometry")[int(i)].as_py() for i in order]
    return [ids[i] for i in order], emb, geom


def temp_files(store: Path) -> list[str]:
    return sorted(
        str(p.relative_to(store))
        for p in store.rglob("*")
        if p.name.endswith(".tmp") or p.name.startswith(".tmp")
    )


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory, sample_dir, nano_weights):
    from clay_search.ingest import run

    tmp = tmp_path_factory.mktemp("faults")
    gpq = clay_geoparquet(tmp / "clay_embeddings.gpq")
    synced = tmp / "sync_base"  # a store with a table for the sync trials
    from clay_search.ingest.importer import import_geoparquet

    import_geoparquet(gpq, synced, model_id="clay-v1.5", sensor="sentinel-2-l2a")
    del run
    ops = {
        "ingest": {
            "kind": "ingest",
            "sources": [str(sample_dir / "naip")],
            "weights": str(nano_weights),
            "kwargs": INGEST_KW,
            "reference_store": str(tmp / "ref_ingest"),
        },
        "sync": {"kind": "sync", "reference_store": str(tmp / "ref_sync"), "warm_reference": True},
        "import": {
            "kind": "import",
            "file": str(gpq),
            "model_id": "clay-v1.5",
            "sensor": "sentinel-2-l2a",
            "reference_store": str(tmp / "ref_import"),
        },
    }
    shutil.copytree(synced, tmp / "ref_sync")
    rng = np.random.default_rng(SEED)
    trials = []
    for op, n in (("ingest", N_INGEST), ("sync", N_SYNC), ("import", N_IMPORT)):
        for k in range(n):
            store = tmp / f"{op}_{k}"
            if op == "sync":
                shutil.copytree(synced, store)
            trials.append({"op": op, "store": str(store), "frac": float(rng.uniform(0.02, 0.7))})
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"ops": ops, "trials": trials}))
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "fault_runner.py"),
            str(spec),
            str(tmp / "results.json"),
        ],
        check=True,
        timeout=60 * 20,
    )
    return json.loads((tmp / "results.json").read_text()), ops


def test_kill_minus_nine_then_resume_equals_an_uninterrupted_run(fault_run):
    from clay_search.store import check_index

    results, ops = fault_run
    assert all(r["rc"] == 0 for r in results["reference"].values()), results["reference"]
    refs = {name: table_state(Path(op["reference_store"])) for name, op in ops.items()}
    killed = dict.fromkeys(ops, 0)
    for t in results["trials"]:
        store = Path(t["store"])
        assert t["resume_rc"] == 0, f"resume failed: {t}"
        killed[t["op"]] += t["killed"]
        ids, emb, geom = table_state(store)
        ref_ids, ref_emb, ref_geom = refs[t["op"]]
        assert len(set(ids)) == len(ids), f"duplicate ids after {t}"
        assert ids == ref_ids, f"{t}: {len(ids)} rows, the uninterrupted run has {len(ref_ids)}"
        np.testing.assert_array_equal(emb, ref_emb)
        assert geom == ref_geom
        check = check_index(store)
        assert check.ok, f"{t}: index does not match the table: {check.to_dict()}"
        assert temp_files(store) == [], t
    # most trials really were killed mid-write (a kill after the op ended proves nothing; the
    # delays are fractions of the uninterrupted run's time, so a loaded machine shifts a few)
    assert sum(killed.values()) >= 20, killed
    assert min(killed.values()) >= 2, killed
