"""Stores on object storage: a real S3-compatible server (moto's server mode) on loopback.

The tests start ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (a real HTTP S3 API, not a
mocked client), point the AWS settings of the environment at it, and ingest, search, resume and
write concurrently into ``s3://BUCKET/PREFIX`` stores (the cases of
``tests/object_store_cases.py``, which Azurite runs too).
"""

from __future__ import annotations

import uuid

import pytest
from object_store_cases import ObjectStoreCases, server_environment

moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed")

from clay_search.location import RemotePath, store_location  # noqa: E402

BUCKET = "clay-test"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on loopback with one bucket; the environment points at it."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with server_environment({**AWS_ENV, "AWS_ENDPOINT_URL": endpoint}):
            import pyarrow.fs as pfs

            pfs.S3FileSystem(
                endpoint_override=f"{host}:{port}",
                scheme="http",
                region="us-east-1",
                allow_bucket_creation=True,
            ).create_dir(BUCKET)
            yield endpoint
    finally:
        server.stop()


@pytest.fixture
def object_store(s3_endpoint) -> str:
    """A fresh store URI in the bucket."""
    return f"s3://{BUCKET}/stores/{uuid.uuid4().hex[:8]}"


def test_location_parsing():
    loc = store_location("s3:/bucket/a/b")  # what a CLI option typed as Path makes of s3://
    assert isinstance(loc, RemotePath) and str(loc) == "s3://bucket/a/b"
    assert str(loc / "store.json") == "s3://bucket/a/b/store.json"
    assert str(store_location("gcs://b/p")) == "gs://b/p"
    assert not isinstance(store_location("file:///tmp/x"), RemotePath)


class TestS3(ObjectStoreCases):
    """The object-store cases on moto's S3 server."""

    scheme = "s3"
