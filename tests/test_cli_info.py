"""The `clay-search` command: help lists subcommands, `info` describes sensors; import hygiene."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from clay_search.cli.main import app
from clay_search.model import ClayEncoder, get_config, save_weights

runner = CliRunner()


def test_help_lists_subcommands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output


def test_info_lists_sensors_and_weights(tmp_path):
    save_weights(ClayEncoder.from_config(get_config("nano")), get_config("nano"), tmp_path / "w")
    result = runner.invoke(app, ["info", "--weights", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "sentinel-2-l2a" in result.output and "clay-nano-p8-" in result.output


def test_info_one_sensor_and_unknown_sensor():
    result = runner.invoke(app, ["info", "--sensor", "sentinel-2-l2a"])
    assert result.exit_code == 0 and "B8A" in result.output
    result = runner.invoke(app, ["info", "--sensor", "nope"])
    assert result.exit_code == 2
    assert "unknown sensor 'nope'" in result.output
    assert "Traceback" not in result.output


def test_missing_weights_is_one_line_error(tmp_path):
    result = runner.invoke(app, ["info", "--weights", str(tmp_path / "missing.ckpt")])
    assert result.exit_code == 2
    assert "weights fetch" in result.output and "Traceback" not in result.output


def test_import_has_no_global_side_effects():
    code = (
        "import torch; p = torch.get_float32_matmul_precision(); n = torch.get_num_threads();"
        "g = torch.is_grad_enabled(); import clay_search, clay_search.model, clay_search.cli.main;"
        "assert torch.get_float32_matmul_precision() == p; assert torch.get_num_threads() == n;"
        "assert torch.is_grad_enabled() == g; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_info_shows_the_measured_precision_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAY_SEARCH_HOME", str(tmp_path / "home"))
    save_weights(ClayEncoder.from_config(get_config("nano")), get_config("nano"), tmp_path / "w")
    result = runner.invoke(app, ["info", "--weights", str(tmp_path / "w")])
    assert result.exit_code == 0 and "not measured on this machine yet" in result.output
    result = runner.invoke(app, ["info", "--weights", str(tmp_path / "w"), "--calibrate", "32"])
    assert result.exit_code == 0, result.output
    assert "precision auto for clay-nano-p8-" in result.output and "at 32 px" in result.output
    assert "measured in" in result.output and "bf16" in result.output
    result = runner.invoke(app, ["info", "--weights", str(tmp_path / "w")])  # from the cache
    assert "at 32 px" in result.output and "cached" in result.output
