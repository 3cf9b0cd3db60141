"""Shared pytest fixtures: where the repository and the real data are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
SAMPLE_DIR = REPO_ROOT / "sample"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real open imagery); tests using it skip where it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only in the team's checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The small real-imagery sample shipped in the repository (``sample/``)."""
    if not SAMPLE_DIR.exists():
        pytest.fail("sample/ is missing from the repository")
    return SAMPLE_DIR


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Point clay-search's cache folder (precision calibrations, ...) at a session temp folder.

    Tests never write into the user's ``~/.cache``; CLI subprocesses inherit the variable.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLAY_SEARCH_HOME", str(tmp_path_factory.mktemp("clay-search-home")))
        yield
