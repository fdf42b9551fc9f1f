"""The Azure blob store against Azurite (Microsoft's emulator, started on loopback)."""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pgfixtures import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, _free_port  # noqa: E402
from securepacs.blobs.azure import AzureBlobStore  # noqa: E402
from securepacs.blobs.putblob import PutBlob  # noqa: E402
from securepacs.errors import ConfigError, StorageError  # noqa: E402
from securepacs.index.repository import SqlIndex  # noqa: E402
from securepacs.services.ingest import IngestService  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture
def store(azurite: Azurite, azure_container: str) -> AzureBlobStore:
    return AzureBlobStore(azurite.connection_string, azure_container, block_size=MIB)


def pattern(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """`total` bytes in chunks, each chunk different, made on the fly."""
    sent = 0
    n = 0
    while sent < total:
        size = min(chunk, total - sent)
        yield bytes([n % 251]) * size
        sent += size
        n += 1


def test_put_read_delete_keys(store: AzureBlobStore) -> None:
    small, large = store.new_key(), store.new_key()
    assert store.put(small, [b"DICM", b"-header", b"+data"]) == 16
    assert store.put(large, pattern(3 * MIB + 12345)) == 3 * MIB + 12345  # 4 staged blocks
    assert store.read(small) == b"DICM-header+data"
    assert store.read(large) == b"".join(pattern(3 * MIB + 12345))
    assert set(store.keys()) == {small, large}
    store.delete(small)
    store.delete(small)  # deleting a missing blob is not an error
    assert set(store.keys()) == {large}
    with pytest.raises(StorageError, match=small):
        store.read(small)
    assert store.sweep_temp() == 0


def test_keys_by_age(store: AzureBlobStore) -> None:
    key = store.new_key()
    store.put(key, b"x" * 10)
    assert list(store.keys(older_than=60)) == []  # just written: protected by the grace period
    assert list(store.keys(older_than=60, now=time.time() + 120)) == [key]


def test_put_streams_in_blocks(store: AzureBlobStore) -> None:
    """A 24 MiB upload never holds more than a few blocks (1 MiB each) in memory."""
    key = store.new_key()
    tracemalloc.start()
    try:
        size = store.put(key, pattern(24 * MIB))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == 24 * MIB
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB for a 24 MiB blob"
    props = store._container.get_blob_client(key).get_blob_properties()
    assert props.size == 24 * MIB and props.blob_type == "BlockBlob"


def test_interrupted_upload_leaves_nothing_visible(store: AzureBlobStore) -> None:
    key = store.new_key()

    def broken() -> Iterator[bytes]:
        yield from pattern(3 * MIB)  # three blocks staged...
        raise ConnectionResetError("sender went away")  # ...then the source fails

    with pytest.raises(ConnectionResetError):
        store.put(key, broken())
    assert key not in set(store.keys())
    with pytest.raises(StorageError):
        store.read(key)


def test_unreachable_account(azure_container: str) -> None:
    dead = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint=http://127.0.0.1:{_free_port()}/devstoreaccount1;")
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach Azure container"):
        AzureBlobStore(dead, azure_container, timeout=2)
    assert time.monotonic() - started < 20
    with pytest.raises(ConfigError, match="invalid Azure connection string"):
        AzureBlobStore("not a connection string", azure_container)


@pytest.fixture
def received_factory():  # noqa: ANN201
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
    from test_ingest import received

    return received


def test_failed_upload_leaves_no_index_row(tmp_path: Path, store: AzureBlobStore, azurite: Azurite,
                                           received_factory) -> None:  # noqa: ANN001
    index = SqlIndex(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.create_schema()
    ingest = IngestService(index, store)
    item = received_factory()
    # the account goes away during the upload (a small instance: one direct Put Blob)
    real = store._put_blob
    assert real is not None
    dead_port = str(_free_port())
    store._put_blob = PutBlob(store._container.url.replace(str(azurite.port), dead_port),
                              AZURITE_ACCOUNT, AZURITE_KEY, api_version="2021-08-06",
                              connect_timeout=2, retries=0)
    with pytest.raises(StorageError, match="cannot write blob"):
        ingest.store(item)
    store._put_blob = real
    assert index.count_instances() == 0
    assert index.get(item.sop_instance_uid) is None
    assert list(store.keys()) == []
    # with the account back, the same instance stores normally
    assert ingest.store(item).value == "stored"
    stored = index.get(item.sop_instance_uid)
    assert stored is not None and list(store.keys()) == [stored.blob_key]
    index.close()


def test_failed_index_write_removes_the_uploaded_blob(tmp_path: Path, store: AzureBlobStore,
                                                      received_factory) -> None:  # noqa: ANN001
    index = SqlIndex(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.create_schema()

    class BrokenIndex:
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(index, name)

        def add(self, *_args: object, **_kwargs: object) -> None:
            raise StorageError("index database error: injected")

    ingest = IngestService(BrokenIndex(), store)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="injected"):
        ingest.store(received_factory())
    assert list(store.keys()) == []
    assert index.count_instances() == 0
    index.close()
