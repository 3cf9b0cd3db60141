"""`clay-search weights fetch/list` against a real HTTP server on loopback (no internet).

The server (http.server in a thread) serves a small Lightning-layout checkpoint with Range support,
and can advertise a digest, corrupt the body or break off mid-file, so the real transport,
verification and resume paths are exercised.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading

import pytest
import torch
import yaml
from typer.testing import CliRunner

from clay_search.cli.main import app
from clay_search.errors import CheckpointNotFoundError, ChecksumError, DownloadError
from clay_search.hub import fetch_weights
from clay_search.model import ClayEncoder, get_config, load_encoder

runner = CliRunner()


def _checkpoint_bytes() -> bytes:
    torch.manual_seed(0)
    enc = ClayEncoder.from_config(get_config("nano"))
    sd = {f"model.encoder.{k}": v for k, v in enc.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "hyper_parameters": {"model_size": "nano"}}, buf)
    return buf.getvalue()


class _Server:
    """A loopback file server: one path, Range requests, optional faults."""

    def __init__(self, body: bytes):
        self.body = body
        self.advertise: str | None = None  # X-Linked-Etag value
        self.corrupt = False
        self.break_after: int | None = None  # close the connection after this many body bytes
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append({"path": self.path, "range": rng})
                if self.path != "/clay-test.ckpt":
                    self.send_error(404)
                    return
                data = bytearray(outer.body)
                if outer.corrupt:
                    data[len(data) // 2] ^= 0xFF
                start = 0
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                if outer.advertise:
                    self.send_header("X-Linked-Etag", f'"{outer.advertise}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                payload = bytes(data[start:])
                if outer.break_after is not None:
                    payload = payload[: outer.break_after]
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clay-test.ckpt"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def body() -> bytes:
    return _checkpoint_bytes()


@pytest.fixture
def server(body):
    with _Server(body) as srv:
        yield srv


@pytest.fixture
def registry(tmp_path, monkeypatch, server, body):
    """A registry file with one entry pointing at the loopback server; cache under tmp_path."""

    def write(sha: str | None):
        entry = {"url": server.url, "filename": "clay-test.ckpt", "sha256": sha, "size": len(body)}
        path = tmp_path / "registry.yaml"
        path.write_text(yaml.safe_dump({"clay-test": entry}))
        monkeypatch.setenv("CLAY_SEARCH_WEIGHTS_REGISTRY", str(path))

    monkeypatch.setenv("CLAY_SEARCH_HOME", str(tmp_path / "home"))
    write(hashlib.sha256(body).hexdigest())
    return write


def test_fetch_verifies_and_name_loads(registry, server, body, tmp_path):
    res = fetch_weights("clay-test")
    assert res.verified_against == "pinned" and res.size == len(body)
    assert res.path == tmp_path / "home" / "weights" / "clay-test" / "clay-test.ckpt"
    assert res.path.read_bytes() == body
    assert json.loads(res.path.with_name("clay-test.ckpt.sha256").read_text())["sha256"] == (
        hashlib.sha256(body).hexdigest()
    )
    # the name now works wherever weights are taken
    _enc, info = load_encoder("clay-test")
    assert info.config.dim == get_config("nano").dim and info.format == "clay-lightning"
    # a second fetch does not download again
    n = len(server.requests)
    assert fetch_weights("clay-test").verified_against == "cached"
    assert len(server.requests) == n


def test_corrupted_download_is_refused_and_deleted(registry, server):
    server.corrupt = True
    with pytest.raises(ChecksumError, match="SHA-256 is .* expected"):
        fetch_weights("clay-test")
    from clay_search.model.registry import get_known

    dest = get_known("clay-test").cached_path()
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_interrupted_download_resumes_with_range(registry, server, body):
    server.break_after = len(body) // 3
    with pytest.raises(DownloadError, match="resume"):
        fetch_weights("clay-test")
    from clay_search.model.registry import get_known

    dest = get_known("clay-test").cached_path()
    part = dest.with_name(dest.name + ".part")
    assert part.is_file() and 0 < part.stat().st_size < len(body)
    kept = part.stat().st_size
    server.break_after = None
    res = fetch_weights("clay-test")
    assert res.resumed_from == kept and res.downloaded == len(body) - kept
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == body and not part.exists()


def test_unpinned_entry_uses_server_digest(registry, server, body):
    registry(None)
    with pytest.raises(ChecksumError, match="neither the registry nor the server"):
        fetch_weights("clay-test")
    server.advertise = hashlib.sha256(body).hexdigest()
    assert fetch_weights("clay-test").verified_against == "server"


def test_offline_fails_at_once_with_where_to_put_the_file(tmp_path, monkeypatch):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = tmp_path / "r.yaml"
    reg.write_text(
        yaml.safe_dump({"gone": {"url": f"http://127.0.0.1:{port}/x.ckpt", "filename": "x.ckpt"}})
    )
    monkeypatch.setenv("CLAY_SEARCH_WEIGHTS_REGISTRY", str(reg))
    monkeypatch.setenv("CLAY_SEARCH_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["weights", "fetch", "gone"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "put it at" in result.output and str(tmp_path / "home") in result.output
    # before fetching, the name says how to get it
    with pytest.raises(CheckpointNotFoundError, match="weights fetch gone"):
        load_encoder("gone")


def test_cli_list_and_fetch(registry, server):
    listed = runner.invoke(app, ["weights", "list"])
    assert listed.exit_code == 0 and "clay-v1.5" in listed.output and "clay-test" in listed.output
    got = runner.invoke(app, ["weights", "fetch", "clay-test"])
    assert got.exit_code == 0, got.output
    assert "use it with --weights clay-test" in got.output
    unknown = runner.invoke(app, ["weights", "fetch", "nope"])
    assert unknown.exit_code == 2 and "no known weights named 'nope'" in unknown.output


def test_bundled_registry_pins_clay_v15():
    from clay_search.model.registry import known_weights

    entry = known_weights()["clay-v1.5"]
    assert entry.url.startswith("https://") and entry.url.endswith("/clay-v1.5.ckpt")
    assert entry.dim == 1024
