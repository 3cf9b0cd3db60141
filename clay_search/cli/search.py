"""Placeholder: being written in this session (see issues). Replaced by the real command."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Nothing registered yet."""
