"""A blob store on Azure Blob Storage (block blobs), the object store of the paper's cloud.

Same methods as :class:`securepacs.blobs.filesystem.FileBlobStore`. Write order for one
blob: its bytes are staged as uncommitted blocks (``Put Block``, at most
:attr:`AzureBlobStore.block_size` bytes held in memory at a time), then made visible at
once by ``Put Block List``; a blob that fits in one block is written with a single
``Put Blob`` (with an account key, the usual case, by :mod:`securepacs.blobs.putblob`,
which sends the caller's buffers as they are: the ingest of a small image). Either way a
reader sees the whole blob or nothing: a writer that dies
before the commit leaves only uncommitted blocks, which no listing shows and which
Azure discards by itself (after 7 days), so :meth:`AzureBlobStore.sweep_temp` has
nothing to do. A successful commit is durable (Azure acknowledges after replicating).

The SDK (``azure-storage-blob``, the ``[azure]`` extra) is imported when a store is made,
so the filesystem default works without it.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from securepacs.blobs.putblob import PutBlob
from securepacs.errors import ConfigError, StorageError

#: Bytes per staged block (Azure allows up to 4000 MiB per block, 50,000 blocks per blob).
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024


def _sdk() -> Any:
    try:
        from azure.storage import blob
    except ImportError:
        raise ConfigError("blob_backend = \"azure\" needs the azure-storage-blob package "
                          "(pip install 'securepacs[azure]')") from None
    return blob


def _block_id(number: int) -> str:
    # every block id of a blob must have the same length before base64
    return base64.b64encode(f"{number:08d}".encode()).decode()


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class AzureBlobStore:
    """Blobs in one container of an Azure storage account (or Azurite), keyed by :meth:`new_key`.

    Parameters
    ----------
    connection_string : str
        The account's connection string (it holds the account key: never logged).
    container : str
        The container; created when missing.
    block_size : int
        Bytes per staged block: the most a :meth:`put` keeps in memory.
    timeout : float
        Seconds for connecting and for each read of a response.

    Raises
    ------
    securepacs.errors.ConfigError
        The SDK is not installed or the connection string cannot be parsed.
    securepacs.errors.StorageError
        The container cannot be reached or created.
    """

    def __init__(self, connection_string: str, container: str, *,
                 block_size: int = DEFAULT_BLOCK_SIZE, timeout: float = 30.0) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        blob = _sdk()
        from azure.core import exceptions

        self._errors = exceptions
        self.block_size = block_size
        self.container_name = container
        try:
            # a few quick retries: the SDK's default waits 15 s and more between tries,
            # while a DICOM peer waits for the C-STORE response
            service = blob.BlobServiceClient.from_connection_string(
                connection_string,
                retry_policy=blob.LinearRetry(backoff=0.5, random_jitter_range=0.2, retry_total=3),
                connection_timeout=min(timeout, 10.0), read_timeout=timeout)
        except (ValueError, exceptions.AzureError) as exc:
            # the message could quote the connection string, which holds the key
            raise ConfigError(f"invalid Azure connection string ({type(exc).__name__})") from None
        self._container = service.get_container_client(container)
        self.account_url = service.url
        self._put_blob = _put_blob(self._container, service, timeout)
        try:
            self._container.create_container()
        except exceptions.ResourceExistsError:
            pass
        except exceptions.AzureError as exc:
            raise StorageError(f"cannot reach Azure container {container!r} at "
                               f"{self.account_url}: {_short(exc)}") from exc

    @staticmethod
    def new_key() -> str:
        """A fresh, unique blob key."""
        return uuid.uuid4().hex

    @staticmethod
    def _check(key: str) -> str:
        if len(key) < 5 or not key.isalnum():
            raise ValueError(f"invalid blob key {key!r}")
        return key

    def _blocks(self, chunks: bytes | bytearray | Iterable[bytes | bytearray]) -> Iterator[bytes]:
        """Re-cut `chunks` into blocks of `block_size` bytes (the last one shorter)."""
        pending = bytearray()
        for chunk in [chunks] if isinstance(chunks, bytes | bytearray) else chunks:
            view = memoryview(chunk)
            while len(pending) + len(view) >= self.block_size:
                take = self.block_size - len(pending)
                pending += view[:take]
                view = view[take:]
                yield bytes(pending)
                pending.clear()
            pending += view
        if pending:
            yield bytes(pending)

    def put(self, key: str, chunks: bytes | bytearray | Iterable[bytes | bytearray]) -> int:
        """Write the blob; returns its size. Visible only once wholly written.

        Raises
        ------
        StorageError
            Azure failed or could not be reached; no blob is visible under `key`.
        """
        self._check(key)
        pieces: list[bytes | bytearray] = []
        size = 0
        rest: Iterator[bytes | bytearray] | None = None
        source = iter([chunks] if isinstance(chunks, bytes | bytearray) else chunks)
        for chunk in source:
            pieces.append(chunk)
            size += len(chunk)
            if size > self.block_size:  # more than one block: staged, the rest streamed
                rest = source
                break
        if rest is None and self._put_blob is not None:  # one request, no copy
            self._put_blob.put(key, pieces, size)
            return size
        client = self._container.get_blob_client(key)
        size = 0
        staged: list[str] = []
        try:
            if rest is None:  # one block: one request
                first = b"".join(pieces)
                client.upload_blob(first, overwrite=True)
                return len(first)
            for data in self._blocks(_chain(pieces, rest)):
                block_id = _block_id(len(staged))
                client.stage_block(block_id, data, length=len(data))
                staged.append(block_id)
                size += len(data)
            client.commit_block_list(staged)
        except self._errors.AzureError as exc:
            raise StorageError(f"cannot write blob {key} to Azure: {_short(exc)}") from exc
        return size

    spool_folder: Path | None = None

    def put_file(self, key: str, path: Path) -> int:
        """Upload the file at `path` as the blob `key` (streamed); `path` is gone afterwards."""
        try:
            with open(path, "rb") as fh:
                return self.put(key, iter(lambda: fh.read(self.block_size), b""))
        except OSError as exc:
            raise StorageError(f"cannot read {path} for blob {key}: {exc.strerror}") from exc
        finally:
            path.unlink(missing_ok=True)

    def read(self, key: str) -> bytes:
        """The whole blob."""
        try:
            return bytes(self._container.get_blob_client(self._check(key)).download_blob().readall())
        except self._errors.AzureError as exc:
            raise StorageError(f"cannot read blob {key} from Azure: {_short(exc)}") from exc

    def delete(self, key: str) -> None:
        """Remove the blob if present."""
        try:
            self._container.get_blob_client(self._check(key)).delete_blob()
        except self._errors.ResourceNotFoundError:
            pass
        except self._errors.AzureError as exc:
            raise StorageError(f"cannot delete blob {key} from Azure: {_short(exc)}") from exc

    def keys(self, *, older_than: float = 0.0, now: float | None = None) -> Iterator[str]:
        """Every committed key last written at least `older_than` seconds ago."""
        limit = (time.time() if now is None else now) - older_than
        try:
            for item in self._container.list_blobs():
                if item.last_modified is None or item.last_modified.timestamp() <= limit:
                    yield str(item.name)
        except self._errors.AzureError as exc:
            raise StorageError(f"cannot list Azure container {self.container_name!r}: "
                               f"{_short(exc)}") from exc

    def sweep_temp(self) -> int:
        """Nothing to remove: uncommitted blocks are invisible and Azure discards them."""
        return 0

    def probe(self) -> str:
        """Check that the container answers; a one-line description of where it is.

        Raises
        ------
        StorageError
            The container cannot be reached.
        """
        try:
            self._container.get_container_properties()
        except self._errors.AzureError as exc:
            raise StorageError(f"Azure container {self.container_name!r} at {self.account_url}: "
                               f"{_short(exc)}") from exc
        return f"Azure container {self.container_name!r} at {self.account_url}"


def _chain(first: list[bytes | bytearray],
           rest: Iterator[bytes | bytearray]) -> Iterator[bytes | bytearray]:
    """The pieces of `first` (each dropped from the list once given), then `rest`."""
    first.reverse()
    while first:
        yield first.pop()
    yield from rest


def _put_blob(container: Any, service: Any, timeout: float) -> PutBlob | None:
    """The direct Put Blob writer for `container`, or None where the SDK must write:
    no account key (a SAS token), or a proxy or a CA bundle named in the environment for
    the SDK's HTTP library (``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE``...), which the direct
    writer does not read."""
    credential = service.credential
    name = getattr(credential, "account_name", None)
    key = getattr(credential, "account_key", None)
    url = str(container.url)
    if not name or not key or "?" in url:
        return None
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    proxies = urllib.request.getproxies()
    if (scheme in proxies or "all" in proxies) and not urllib.request.proxy_bypass(host):
        return None
    if scheme == "https" and (os.environ.get("REQUESTS_CA_BUNDLE")
                              or os.environ.get("CURL_CA_BUNDLE")):
        return None
    try:
        return PutBlob(url, str(name), str(key), api_version=str(service.api_version),
                       timeout=timeout, connect_timeout=min(timeout, 10.0))
    except ValueError:
        return None
