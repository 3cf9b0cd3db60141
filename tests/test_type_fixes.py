"""Bugs the type checker found (mypy over the whole package)."""

from __future__ import annotations

from clay_search.location import RemotePath, is_remote
from clay_search.store.lock import StoreLock


def test_store_lock_on_an_object_store_uri_given_as_text():
    """A remote store given as text was kept as a ``str``, whose ``/ '.write.lock'`` raised
    TypeError before the lock could say it is a no-op there."""
    lock = StoreLock("s3://bucket/prefix", "a test")
    assert lock.remote and isinstance(lock.store, RemotePath)
    with lock:  # a no-op on object stores (LanceDB's commit protocol orders writers)
        pass


def test_is_remote_is_a_bool():
    assert is_remote("s3://b/p") is True
    assert is_remote("/tmp/store") is False
    assert is_remote("s3:/b/p") is True  # what a Path-typed CLI option makes of s3://
