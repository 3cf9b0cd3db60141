"""``clay-search app``: serve the Streamlit search app for a store (loopback unless told)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from clay_search.cli.options import StoreOpt, WeightsOpt, handle_errors
from clay_search.store.layout import STORE_ENV_VAR as STORE_ENV
from clay_search.store.layout import WEIGHTS_ENV_VAR as WEIGHTS_ENV

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def script_path() -> Path:
    """The Streamlit script shipped in ``clay_search.app``."""
    import clay_search.app

    return Path(clay_search.app.__file__).resolve().parent / "streamlit_app.py"


def max_upload_mb() -> int:
    """The app's upload limit in Streamlit's unit (MB of 2**20 bytes), at least 1."""
    from clay_search.app.upload import MAX_UPLOAD_BYTES

    return max(1, MAX_UPLOAD_BYTES // 2**20)


def streamlit_command(store: Path, host: str, port: int, weights: Path | None = None) -> list[str]:
    """The ``streamlit run`` command line that serves the app for ``store`` (through
    :mod:`clay_search.app.serve`, which opens the store while the server starts)."""
    return [
        sys.executable,
        "-m",
        "clay_search.app.serve",  # Streamlit's CLI, the store opened while the server starts
        "run",
        str(script_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        # a public surface: uploads bounded before they reach the app's own checks, and error
        # pages without tracebacks (which name server paths)
        "--server.maxUploadSize",
        str(max_upload_mb()),  # Streamlit's own limit (MB) = the app's query-chip limit
        "--client.showErrorDetails",
        "false",
        "--server.enableXsrfProtection",
        "true",
        "--",
        "--store",
        str(store),
        *(["--weights", str(weights)] if weights else []),
    ]


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("app")(serve)


@handle_errors
def serve(
    store: StoreOpt,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default; 0.0.0.0 = all).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8501,
    weights: WeightsOpt = None,
) -> None:
    """Serve the search app: map, gallery, search / refine, filters, upload, export."""
    from clay_search.errors import CheckpointNotFoundError
    from clay_search.store.layout import read_store_info

    read_store_info(store)  # a clear one-line error now rather than a blank page later
    store = store.resolve()
    if weights is not None and not weights.exists():
        raise CheckpointNotFoundError(f"weights {weights} do not exist")
    cmd = streamlit_command(store, host, port, weights.resolve() if weights else None)
    typer.echo(f"clay-search app for {store} on http://{host}:{port} (Ctrl+C stops it)")
    if host not in LOOPBACK and not host.startswith("127."):
        typer.secho(
            f"Warning: --host {host} serves the app beyond this machine. It has no login: "
            "anyone who can reach the port can search the store, see its thumbnails and "
            "upload files. Put it behind an authenticating reverse proxy, or use the default "
            "--host 127.0.0.1 with an SSH tunnel.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    env = {**os.environ, STORE_ENV: str(store)}
    if weights:
        env[WEIGHTS_ENV] = str(weights.resolve())
    try:
        rc = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        rc = 0
    raise typer.Exit(rc)
