"""Every Python package folder is listed in pyproject (a wheel would miss it otherwise)."""

from __future__ import annotations

import tomllib

from conftest import REPO_ROOT


def test_all_packages_are_listed():
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    dirs = cfg["package-dir"]
    found = set()
    for pkg, folder in dirs.items():
        root = REPO_ROOT / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            name = ".".join([pkg, *rel.parts]) if rel.parts else pkg
            # subfolders of clay_search that are mapped elsewhere are not nested packages
            found.add(name)
    assert found <= listed, f"packages missing from pyproject: {sorted(found - listed)}"
    assert not any(name.split(".")[0] != "clay_search" for name in listed)
