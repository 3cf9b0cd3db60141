"""`clay-search app`: the command line it runs and its errors (server: test_app_browser)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from clay_search.app.upload import MAX_UPLOAD_BYTES
from clay_search.cli.app import script_path, streamlit_command
from clay_search.cli.main import app


def test_streamlit_command_is_loopback_headless_and_names_the_store(tmp_path: Path) -> None:
    cmd = streamlit_command(tmp_path / "s", "127.0.0.1", 8501)
    assert script_path().is_file() and str(script_path()) in cmd
    pairs = dict(zip(cmd[5::2], cmd[6::2], strict=False))
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--server.port"] == "8501"
    assert pairs["--server.headless"] == "true" and pairs["--browser.gatherUsageStats"] == "false"
    # Streamlit's upload box states (and enforces) the app's own limit, not its 200MB default
    assert pairs["--server.maxUploadSize"] == str(MAX_UPLOAD_BYTES // 2**20) == "5"
    assert cmd[cmd.index("--") + 1 :] == ["--store", str(tmp_path / "s")]
    with_w = streamlit_command(tmp_path / "s", "0.0.0.0", 9000, tmp_path / "w")
    assert with_w[-2:] == ["--weights", str(tmp_path / "w")]


def test_missing_store_is_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["app", "--store", str(tmp_path / "none")])
    assert res.exit_code == 2
    assert "no clay-search store" in res.output and "Traceback" not in res.output


def test_help_mentions_host_and_port() -> None:
    res = CliRunner().invoke(app, ["app", "--help"])
    assert res.exit_code == 0 and "--host" in res.output and "--port" in res.output
