"""The direct Put Blob writer (securepacs.blobs.putblob) against Azurite: a small blob is
one signed request sent from the caller's buffers; failures are retried as documented."""

from __future__ import annotations

import socket
import sys
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pgfixtures import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, _free_port  # noqa: E402
from securepacs.blobs.azure import AzureBlobStore  # noqa: E402
from securepacs.blobs.putblob import PutBlob  # noqa: E402
from securepacs.errors import StorageError  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture
def store(azurite: Azurite, azure_container: str) -> AzureBlobStore:
    return AzureBlobStore(azurite.connection_string, azure_container)


def writer(store: AzureBlobStore, *, key: str = AZURITE_KEY, url: str | None = None,
           retries: int = 3, backoff: float = 0.5) -> PutBlob:
    return PutBlob(url or store._container.url, AZURITE_ACCOUNT, key, api_version="2021-08-06",
                   connect_timeout=2, timeout=10, retries=retries, backoff=backoff)


def test_small_blob_is_one_put_blob_from_the_callers_buffers(store: AzureBlobStore) -> None:
    """An instance below the block size goes up in one request with no copy of its bytes
    (the SDK path copied them twice: 3 MiB of allocations for a 1.5 MiB blob)."""
    assert store._put_blob is not None  # an account key, no proxy: the direct writer
    key = store.new_key()
    header, data = b"DICM-header", bytearray(range(256)) * (6 * 1024)  # 1.5 MiB
    tracemalloc.start()
    try:
        size = store.put(key, [header, data])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == len(header) + len(data)
    assert peak < 256 * 1024, f"{peak} bytes allocated to upload {size}"
    assert store.read(key) == header + data
    props = store._container.get_blob_client(key).get_blob_properties()
    assert props.size == size and props.blob_type == "BlockBlob"
    assert props.content_settings.content_type == "application/octet-stream"


def test_empty_blob_and_overwrite(store: AzureBlobStore) -> None:
    key = store.new_key()
    assert store.put(key, []) == 0
    assert store.read(key) == b""
    assert store.put(key, b"second") == 6  # Put Blob replaces what the key held
    assert store.read(key) == b"second"


def test_wrong_account_key_is_refused_without_retrying(store: AzureBlobStore) -> None:
    wrong = "d3JvbmcgYWNjb3VudCBrZXk="  # base64 of "wrong account key"
    key = store.new_key()
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot write blob \w+ to Azure: 403") as caught:
        writer(store, key=wrong, backoff=5).put(key, [b"data"], 4)
    assert time.monotonic() - started < 5  # a 403 is final: no back-off sleep
    assert wrong not in str(caught.value) and AZURITE_KEY not in str(caught.value)
    assert key not in set(store.keys())


def test_unreachable_service_fails_after_the_retries(store: AzureBlobStore) -> None:
    dead = f"http://127.0.0.1:{_free_port()}/{AZURITE_ACCOUNT}/{store.container_name}"
    with pytest.raises(StorageError, match="cannot write blob .* to Azure: .*refused"):
        writer(store, url=dead, retries=2, backoff=0.01).put(store.new_key(), [b"x"], 1)


@pytest.mark.parametrize("how", [socket.SHUT_RD, socket.SHUT_RDWR])
def test_a_kept_alive_connection_closed_meanwhile_is_replaced(store: AzureBlobStore,
                                                              how: int) -> None:
    """With no retries allowed, the second put still succeeds: the dead kept-alive
    connection (EOF before the answer, or a failed send) is not counted as a try."""
    put = writer(store, retries=0)
    first, second = store.new_key(), store.new_key()
    put.put(first, [b"one"], 3)
    assert len(put._idle) == 1
    sock = put._idle[0].sock
    assert sock is not None
    sock.shutdown(how)
    put.put(second, [b"two"], 3)
    assert store.read(first) == b"one" and store.read(second) == b"two"
    assert len(put._idle) == 1 and put._idle[0].sock is not sock
    put.close()
    assert put._idle == []


def test_concurrent_puts_share_a_pool_of_connections(store: AzureBlobStore) -> None:
    keys = [[store.new_key() for _ in range(5)] for _ in range(6)]
    errors: list[BaseException] = []

    def run(mine: list[str]) -> None:
        try:
            for key in mine:
                store.put(key, [key.encode(), b"-payload"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(mine,)) for mine in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert store._put_blob is not None and 1 <= len(store._put_blob._idle) <= len(threads)
    for mine in keys:
        for key in mine:
            assert store.read(key) == key.encode() + b"-payload"


def test_a_proxy_in_the_environment_leaves_the_upload_to_the_sdk(
        azurite: Azurite, azure_container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the SDK goes through it
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # ...but not for this host
    assert AzureBlobStore(azurite.connection_string, azure_container)._put_blob is not None
    monkeypatch.delenv("NO_PROXY")
    from securepacs.blobs import azure

    # (made directly: a store would reach its container through the dead proxy)
    service = azure._sdk().BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(azure_container)
    assert azure._put_blob(container, service, 5.0) is None


def test_sas_connection_string_uploads_through_the_sdk(azurite: Azurite,
                                                       azure_container: str) -> None:
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    sas = generate_account_sas(
        AZURITE_ACCOUNT, AZURITE_KEY, ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=1))
    connection = (f"BlobEndpoint=http://127.0.0.1:{azurite.port}/{AZURITE_ACCOUNT};"
                  f"SharedAccessSignature={sas}")
    store = AzureBlobStore(connection, azure_container)
    assert store._put_blob is None  # no account key to sign with
    key = store.new_key()
    assert store.put(key, [b"DICM", bytearray(b"+data")]) == 9
    assert store.read(key) == b"DICM+data"
    assert list(store.keys()) == [key]


def test_serve_logging_keeps_the_sdk_http_trace_out_of_the_log() -> None:
    """The SDK logs each request's and response's headers at INFO: the server's log
    level (INFO by default) must not let that through; DEBUG still does."""
    import logging

    from securepacs.cli.serve import configure_logging

    root, sdk = logging.getLogger(), logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    saved = root.level, logging.getLogger("azure").level
    try:
        root.setLevel(logging.INFO)  # as basicConfig sets it (a no-op under pytest's handlers)
        configure_logging("info")
        assert root.isEnabledFor(logging.INFO) and not sdk.isEnabledFor(logging.INFO)
        assert sdk.isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(saved[0])
        logging.getLogger("azure").setLevel(saved[1])
