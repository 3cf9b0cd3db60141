"""Where a store lives: a local folder or an object-store prefix (``s3://``, ``gs://``, ``az://``).

One file layer for the store's own files (``store.json``, the index folder, run manifests):
:func:`store_location` gives a :class:`pathlib.Path` for a local folder and a
:class:`RemotePath` (the same small subset of ``Path``'s methods, over ``pyarrow.fs``) for an
object store. LanceDB opens the table itself, from :func:`lancedb_uri` and
:func:`storage_options`. Settings come from the environment, as the AWS/GCP/Azure tools read
them: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``; ``az://CONTAINER/PREFIX``: ``AZURE_STORAGE_ACCOUNT_NAME``,
``AZURE_STORAGE_ACCOUNT_KEY`` (or ``AZURE_STORAGE_SAS_TOKEN``; neither: Azure's default
credential chain), and for the Azurite emulator ``AZURE_STORAGE_USE_EMULATOR=true`` with
``AZURITE_BLOB_STORAGE_URL`` (default ``http://127.0.0.1:10000``); ``gs://BUCKET/PREFIX``:
``pyarrow.fs``'s and Lance's defaults (``GOOGLE_APPLICATION_CREDENTIALS``, or the metadata
server), and for an emulator ``STORAGE_EMULATOR_HOST`` (``http://HOST:PORT``; no scheme means
``http``), as Google's own clients read it: anonymous access at that endpoint for ``pyarrow.fs``,
and for Lance a service-account key with that ``gcs_base_url`` and OAuth off.

``gs://`` is tested against fake-gcs-server on loopback (``tests/test_store_gcs.py``) for this
file layer and for reading a store (search with its index); writing the table is not:
Lance's object_store writes through GCS's XML API (``PUT /BUCKET/OBJECT``), which the emulator
does not serve (``400 invalid uploadType``).

Writes: :func:`write_atomic` writes a whole file at once (a temporary file and ``os.replace``
locally; one PUT on an object store, which readers see whole or not at all; on ``gs://``
pyarrow's writer is a resumable upload, and the object appears only when it is finalised on
close, so no empty-blob window as on ``az://``).
"""

from __future__ import annotations

import json
import os
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from clay_search.errors import StoreNotFoundError

REMOTE_SCHEMES = ("s3", "gs", "az")
#: How long a read of an empty ``az://`` blob waits for the write that emptied it (seconds).
_EMPTY_WAIT_S = 5.0

_SCHEME_ALIASES = {"gcs": "gs", "abfs": "az", "abfss": "az"}
# pathlib collapses "s3://b/p" to "s3:/b/p" (a CLI option typed as Path does that): undo it
_COLLAPSED = re.compile(r"^([a-z0-9]+):/(?!/)")


def is_remote(uri: str | os.PathLike) -> bool:
    """Whether ``uri`` names an object store (``s3://``, ``gs://``, ``az://``)."""
    m = re.match(r"^([a-z0-9]+):/", str(uri))
    return m is not None and _SCHEME_ALIASES.get(m.group(1), m.group(1)) in REMOTE_SCHEMES


def _normalise(uri: str) -> str:
    uri = _COLLAPSED.sub(r"\1://", uri).rstrip("/")
    scheme, rest = uri.split("://", 1)
    return f"{_SCHEME_ALIASES.get(scheme, scheme)}://{rest}"


def store_location(uri: str | os.PathLike | RemotePath) -> Path | RemotePath:
    """A local ``Path`` (``file://`` stripped) or a :class:`RemotePath` for an object store."""
    s = str(uri)
    if is_remote(s):
        return RemotePath(_normalise(s))
    if re.match(r"^[a-z0-9+]+://", s) and not s.startswith("file://"):
        raise StoreNotFoundError(
            f"store URI {s!r}: unknown scheme; give a folder or s3://, gs://, az:// BUCKET/PREFIX"
        )
    return Path(s.removeprefix("file://"))


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _azure_settings() -> dict[str, str]:
    """Azure account, credentials and emulator endpoint from the environment."""
    out: dict[str, str] = {}
    for env, key in (
        ("AZURE_STORAGE_ACCOUNT_NAME", "account_name"),
        ("AZURE_STORAGE_ACCOUNT_KEY", "account_key"),
        ("AZURE_STORAGE_SAS_TOKEN", "sas_token"),
    ):
        if os.environ.get(env):
            out[key] = os.environ[env]
    if os.environ.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true", "yes"):
        out["use_emulator"] = "true"
        out["emulator_url"] = os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000")
    return out


def _gcs_emulator() -> str | None:
    """The GCS emulator's URL from ``STORAGE_EMULATOR_HOST`` (``http://`` where none is given)."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def _gcs_storage_options() -> dict[str, str]:
    """Lance's options for ``gs://``: none (its defaults) or, for an emulator, a key that
    points object_store at it (``gcs_base_url``) with OAuth off."""
    emulator = _gcs_emulator()
    if emulator is None:
        return {}
    key = {
        "gcs_base_url": emulator,
        "disable_oauth": True,
        "client_email": "",
        "private_key": "",
        "private_key_id": "",
    }
    opts = {"google_service_account_key": json.dumps(key)}
    if emulator.startswith("http://"):
        opts["allow_http"] = "true"
    return opts


def storage_options(uri: str) -> dict[str, str]:
    """LanceDB/Lance ``storage_options`` for an object-store URI, from the environment."""
    if uri.startswith("az://"):
        az = _azure_settings()
        if az.pop("emulator_url", None):  # Lance's object_store reads AZURITE_BLOB_STORAGE_URL
            az["allow_http"] = "true"
        return az
    if uri.startswith("gs://"):
        return _gcs_storage_options()
    if not uri.startswith("s3://"):
        return {}
    opts: dict[str, str] = {}
    endpoint = _s3_endpoint()
    if endpoint:
        opts["endpoint"] = endpoint
        if endpoint.startswith("http://"):
            opts["allow_http"] = "true"
    if _region():
        opts["region"] = _region()  # type: ignore[assignment]
    for env, key in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ):
        if os.environ.get(env):
            opts[key] = os.environ[env]
    return opts


@lru_cache(maxsize=8)
def _filesystem(scheme: str, bucket: str, settings: tuple) -> Any:
    import pyarrow.fs as pfs

    if scheme == "s3":
        kw: dict[str, Any] = dict(settings)
        endpoint = kw.pop("endpoint", None)
        if endpoint:
            parsed = urlparse(endpoint)
            kw["endpoint_override"] = parsed.netloc or parsed.path
            kw["scheme"] = parsed.scheme or "https"
        return pfs.S3FileSystem(**kw)
    if scheme == "az":
        kw = dict(settings)
        account = kw.get("account_name")
        if not account:
            raise StoreNotFoundError(
                "az:// stores need the storage account: set AZURE_STORAGE_ACCOUNT_NAME "
                "(and AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN)"
            )
        opts: dict[str, Any] = {k: kw[k] for k in ("account_key", "sas_token") if kw.get(k)}
        if kw.get("emulator_url"):
            parsed = urlparse(kw["emulator_url"])
            opts.update(blob_storage_authority=parsed.netloc, blob_storage_scheme=parsed.scheme)
            opts.update(dfs_storage_authority=parsed.netloc, dfs_storage_scheme=parsed.scheme)
        return pfs.AzureFileSystem(account, **opts)
    emulator = dict(settings).get("emulator")
    if scheme == "gs" and emulator:
        parsed = urlparse(emulator)
        return pfs.GcsFileSystem(
            anonymous=True, endpoint_override=parsed.netloc, scheme=parsed.scheme or "http"
        )
    fs, _ = pfs.FileSystem.from_uri(f"{scheme}://{bucket}")
    return fs


class RemotePath:
    """An object-store key prefix with the few ``pathlib.Path`` methods the store uses.

    ``/`` joins, ``exists``/``is_file``, ``read_bytes``/``read_text``, ``write_bytes``/
    ``write_text`` (one PUT), ``unlink``, ``iterdir``, ``mkdir`` (nothing to do: prefixes need
    no folders). ``str()`` is the URI.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        parsed = urlparse(self.uri)
        self.scheme = parsed.scheme
        self.bucket = parsed.netloc
        self.key = parsed.path.lstrip("/")
        if not self.bucket:
            raise StoreNotFoundError(
                f"store URI {uri!r} names no bucket: use {self.scheme}://BUCKET/PREFIX"
            )

    # -- pathlib-like ----------------------------------------------------------------------------
    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.uri}/{name}")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def name(self) -> str:
        """The last part of the key."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        """The prefix one level up."""
        return RemotePath(self.uri.rsplit("/", 1)[0])

    def with_suffix(self, suffix: str) -> RemotePath:
        """The same key with its suffix replaced (as ``Path.with_suffix``)."""
        stem = self.name.rsplit(".", 1)[0] if "." in self.name else self.name
        return self.parent / f"{stem}{suffix}"

    @property
    def fs(self) -> Any:
        """The ``pyarrow.fs`` filesystem of this bucket."""
        settings: tuple = ()
        if self.scheme == "s3":
            s: dict[str, Any] = {}
            if _s3_endpoint():
                s["endpoint"] = _s3_endpoint()
            if _region():
                s["region"] = _region()
            settings = tuple(sorted(s.items()))
        elif self.scheme == "az":
            settings = tuple(sorted(_azure_settings().items()))
        elif self.scheme == "gs" and _gcs_emulator():
            settings = (("emulator", _gcs_emulator()),)
        return _filesystem(self.scheme, self.bucket, settings)

    @property
    def fs_path(self) -> str:
        """``bucket/key`` as ``pyarrow.fs`` names it."""
        return f"{self.bucket}/{self.key}".rstrip("/")

    def _info(self):
        return self.fs.get_file_info(self.fs_path)

    def exists(self) -> bool:
        """Whether an object (or a prefix with objects under it) is there."""
        import pyarrow.fs as pfs

        return self._info().type != pfs.FileType.NotFound

    def is_file(self) -> bool:
        """Whether an object with exactly this key exists."""
        import pyarrow.fs as pfs

        return self._info().type == pfs.FileType.File

    def read_bytes(self) -> bytes:
        """The object's content (``FileNotFoundError`` if absent).

        On ``az://`` pyarrow's writer creates the blob empty when it opens it and commits the
        content when it closes it, so a reader in between sees an empty blob where the old
        content was, or fails to read the size it was just told (HTTP 416); two writers
        creating one store once read an empty ``store.json``. None of the store's objects is
        ever empty when whole, so an empty read there is read again until the write lands
        (:data:`_EMPTY_WAIT_S` at most, then returned as it is).
        """
        deadline = time.monotonic() + _EMPTY_WAIT_S
        while True:
            try:
                data = self._read_once()
            except OSError as e:  # emptied between reading its size and its bytes (416)
                text = str(e).lower()
                emptied = "416" in text or "invalidrange" in text
                if self.scheme != "az" or not emptied or time.monotonic() >= deadline:
                    raise
                data = b""
            if data or self.scheme != "az" or time.monotonic() >= deadline:
                return data
            time.sleep(0.05)

    def _read_once(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.fs_path) as f:
                return f.read()
        except OSError as e:
            if not self.exists():
                raise FileNotFoundError(f"{self.uri} does not exist") from e
            raise

    def read_text(self) -> str:
        """The object's content as UTF-8 text."""
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole object (one PUT on S3; on ``az://`` the blob is empty until the
        write closes, see :meth:`read_bytes`)."""
        with self.fs.open_output_stream(self.fs_path) as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        """Write UTF-8 text in one PUT."""
        self.write_bytes(text.encode("utf-8"))

    def unlink(self, missing_ok: bool = False) -> None:
        """Delete the object."""
        try:
            self.fs.delete_file(self.fs_path)
        except (FileNotFoundError, OSError):
            if not missing_ok and not self.exists():
                raise FileNotFoundError(f"{self.uri} does not exist") from None

    def iterdir(self) -> list[RemotePath]:
        """The objects directly under this prefix (on ``gs://`` objects only: pyarrow's GCS
        listing names no sub-prefix without a folder-marker object; the store lists only
        objects: index generations, run manifests)."""
        import pyarrow.fs as pfs

        sel = pfs.FileSelector(self.fs_path, allow_not_found=True)
        return [RemotePath(f"{self.scheme}://{i.path}") for i in self.fs.get_file_info(sel)]

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do on an object store (prefixes exist once objects do)."""


def write_atomic(path: Path | RemotePath, data: bytes | str) -> None:
    """Write a whole file so that readers see the old content or the new, never a part."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if isinstance(path, RemotePath):
        path.write_bytes(raw)
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, path)


def lancedb_uri(path: Path | RemotePath) -> str:
    """The URI LanceDB connects to for a store's ``lancedb`` folder."""
    return str(path)


def connect_lancedb(path: Path | RemotePath):
    """``lancedb.connect`` for a local folder or an object-store prefix (with its options)."""
    import lancedb

    uri = lancedb_uri(path)
    opts = storage_options(uri) if isinstance(path, RemotePath) else {}
    return lancedb.connect(uri, storage_options=opts or None)
