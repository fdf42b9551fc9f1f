"""Ingest write ordering and recovery, on the real SQLite index and filesystem store."""

from __future__ import annotations

import os
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factories import make_dataset  # noqa: E402
from securepacs.blobs.filesystem import FileBlobStore  # noqa: E402
from securepacs.errors import (  # noqa: E402
    InvalidInstanceError,
    SopClassMismatchError,
    StorageError,
)
from securepacs.index.repository import SqlIndex  # noqa: E402
from securepacs.services import part10
from securepacs.services.ingest import IngestService, Outcome, Received, sweep_orphans  # noqa: E402


def received(**kwargs: Any) -> Received:
    ds = make_dataset(**kwargs)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    group_length = int.from_bytes(raw[140:144], "little")
    return Received(raw[144 + group_length:], ds.SOPClassUID, ds.SOPInstanceUID,
                    ds.file_meta.TransferSyntaxUID, "TESTSCU")


class Recorder:
    """Wraps a real store or index and records the order of the calls that matter."""

    def __init__(self, inner: Any, log: list[str], name: str, fail_on: str | None = None):
        self._inner, self._log, self._name, self._fail_on = inner, log, name, fail_on

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._inner, attr)
        if not callable(target) or attr not in ("put", "add", "delete"):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append(f"{self._name}.{attr}")
            if attr == self._fail_on:
                raise StorageError("injected failure")
            return target(*args, **kwargs)

        return call


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SqlIndex, FileBlobStore]:
    index = SqlIndex(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.create_schema()
    return index, FileBlobStore(tmp_path / "blobs")


def test_blob_is_durable_before_the_row(stores: tuple[SqlIndex, FileBlobStore]) -> None:
    index, blobs = stores
    calls: list[str] = []
    service = IngestService(Recorder(index, calls, "index"), Recorder(blobs, calls, "blobs"))
    item = received()
    assert service.store(item) is Outcome.STORED
    assert calls == ["blobs.put", "index.add"]
    stored = index.get(item.sop_instance_uid)
    assert stored is not None
    assert blobs.read(stored.blob_key).endswith(item.dataset)
    assert blobs.read(stored.blob_key)[128:132] == b"DICM"


class Watch:
    """An index whose add checks, when the blob's `ready` returns (just before the
    commit), that the blob is in place and no temp file is left, and counts the fsyncs
    made by then."""

    def __init__(self, index: SqlIndex, blobs: FileBlobStore, fsyncs: list[int]) -> None:
        self._index, self._blobs, self._fsyncs = index, blobs, fsyncs
        self.seen: list[tuple[bool, bool, int]] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._index, attr)

    def add(self, record: Any, *, ready: Any = None, **kwargs: Any) -> Any:
        def watched() -> object:
            assert ready is not None
            out = ready()
            self.seen.append((self._blobs.path(record.blob_key).is_file(),
                              not list((self._blobs.root / "tmp").iterdir()),
                              len(self._fsyncs)))
            return out

        return self._index.add(record, ready=watched, **kwargs)


def test_the_row_commits_only_after_the_blob_and_its_folder_are_fsynced(
        stores: tuple[SqlIndex, FileBlobStore], monkeypatch: pytest.MonkeyPatch) -> None:
    """The durability order itself: when the index transaction is let to commit, the blob
    is renamed into place and both fsyncs (file, folder) are done; a write that fails at
    its fsync fails the store and leaves no row, no blob and no temp file."""
    index, blobs = stores
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    watch = Watch(index, blobs, fsyncs)
    service = IngestService(watch, blobs)
    assert service.store(received()) is Outcome.STORED  # a new folder: mkdir + its fsyncs
    fsyncs.clear()
    assert service.store(received()) is Outcome.STORED
    assert watch.seen[-1] == (True, True, 2)  # in place, no temp file, file + folder fsynced

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    item = received()
    with pytest.raises(StorageError):
        service.store(item)
    assert index.get(item.sop_instance_uid) is None
    assert len(list(blobs.keys())) == 2
    assert not list((blobs.root / "tmp").iterdir())


def test_index_failure_removes_the_blob(stores: tuple[SqlIndex, FileBlobStore]) -> None:
    index, blobs = stores
    calls: list[str] = []
    service = IngestService(Recorder(index, calls, "index", fail_on="add"), blobs)
    with pytest.raises(StorageError):
        service.store(received())
    assert list(blobs.keys()) == []


def test_duplicate_keeps_first_and_writes_nothing(stores: tuple[SqlIndex, FileBlobStore]) -> None:
    index, blobs = stores
    item = received()
    service = IngestService(index, blobs)
    assert service.store(item) is Outcome.STORED
    first = index.get(item.sop_instance_uid)
    assert service.store(item) is Outcome.DUPLICATE
    assert index.get(item.sop_instance_uid) == first
    assert len(list(blobs.keys())) == 1


def test_replace_swaps_the_blob(stores: tuple[SqlIndex, FileBlobStore]) -> None:
    index, blobs = stores
    item = received()
    IngestService(index, blobs).store(item)
    old = index.get(item.sop_instance_uid)
    assert IngestService(index, blobs, replace_duplicates=True).store(item) is Outcome.REPLACED
    new = index.get(item.sop_instance_uid)
    assert old is not None and new is not None and new.blob_key != old.blob_key
    assert list(blobs.keys()) == [new.blob_key]


def test_mismatches_and_garbage_write_nothing(stores: tuple[SqlIndex, FileBlobStore]) -> None:
    index, blobs = stores
    service = IngestService(index, blobs)
    item = received()
    with pytest.raises(InvalidInstanceError, match="SOP Instance UID"):
        service.store(Received(item.dataset, item.sop_class_uid, "1.2.3",
                               item.transfer_syntax_uid))
    with pytest.raises(SopClassMismatchError):
        service.store(Received(item.dataset, "1.2.840.10008.5.1.4.1.1.4",
                               item.sop_instance_uid, item.transfer_syntax_uid))
    with pytest.raises(InvalidInstanceError, match="malformed"):
        service.store(Received(b"\x08\x00\x18\x00UI\xff\x7fgarbage", item.sop_class_uid,
                               item.sop_instance_uid, item.transfer_syntax_uid))
    assert list(blobs.keys()) == []


def test_sweep_removes_orphans_and_keeps_referenced(stores: tuple[SqlIndex, FileBlobStore]) -> None:
    index, blobs = stores
    item = received()
    IngestService(index, blobs).store(item)
    orphan = blobs.new_key()
    blobs.put(orphan, b"written, never indexed")
    (blobs.root / "tmp" / f"{'c' * 32}.999999999.tmp").write_bytes(b"half")
    young = sweep_orphans(index, blobs, grace_seconds=3600)
    assert young.orphan_blobs == 0 and orphan in set(blobs.keys())
    report = sweep_orphans(index, blobs, grace_seconds=0)
    assert (report.temp_files, report.orphan_blobs) == (0, 1) or report.orphan_blobs == 1
    stored = index.get(item.sop_instance_uid)
    assert stored is not None and list(blobs.keys()) == [stored.blob_key]
    assert not os.listdir(blobs.root / "tmp")


def as_received_file(item: Received, path: Path) -> Received:
    """The same C-STORE as the network layer delivers a large one: a Part 10 file with
    its own (another implementation's) File Meta Information, then the data set."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(item.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(item.sop_instance_uid)
    meta.TransferSyntaxUID = UID(item.transfer_syntax_uid)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.3811.2.0.0")
    buf = BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta)  # type: ignore[arg-type]
    path.write_bytes(buf.getvalue() + item.dataset)
    return Received(b"", item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax_uid,
                    item.calling_ae, dataset_file=path)


def test_received_file_is_stored_like_bytes(stores: tuple[SqlIndex, FileBlobStore],
                                            tmp_path: Path) -> None:
    index, blobs = stores
    service = IngestService(index, blobs)
    item = received()
    assert service.store(as_received_file(item, tmp_path / "rx.dcm")) is Outcome.STORED
    stored = index.get(item.sop_instance_uid)
    assert stored is not None
    kept = blobs.read(stored.blob_key)
    # our File Meta Information (with the calling AE), then the data set as sent
    assert kept.endswith(item.dataset) and b"TESTSCU" in kept[:len(kept) - len(item.dataset)]
    other = received()
    assert service.store(other) is Outcome.STORED
    by_bytes = index.get(other.sop_instance_uid)
    assert by_bytes is not None
    # the same layout whichever way the data set arrived (UIDs differ in length, so
    # compare with the header each should have, not with each other)
    for blob, sent in ((kept, item), (blobs.read(by_bytes.blob_key), other)):
        assert blob == part10.header_for(sent.sop_class_uid, sent.sop_instance_uid,
                                         sent.transfer_syntax_uid, sent.calling_ae) + sent.dataset


def test_received_file_garbage_or_truncated_writes_nothing(
        stores: tuple[SqlIndex, FileBlobStore], tmp_path: Path) -> None:
    index, blobs = stores
    service = IngestService(index, blobs)
    item = received()
    rx = as_received_file(item, tmp_path / "rx.dcm")
    whole = rx.dataset_file.read_bytes()  # type: ignore[union-attr]
    rx.dataset_file.write_bytes(whole[:-7])  # type: ignore[union-attr]
    with pytest.raises(InvalidInstanceError, match="malformed"):
        service.store(rx)
    bad = as_received_file(Received(b"\x08\x00\x18\x00UI\xff\x7fgarbage", item.sop_class_uid,
                                    item.sop_instance_uid, item.transfer_syntax_uid),
                           tmp_path / "bad.dcm")
    with pytest.raises(InvalidInstanceError, match="malformed"):
        service.store(bad)
    (tmp_path / "nometa.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(InvalidInstanceError):
        service.store(Received(b"", item.sop_class_uid, item.sop_instance_uid,
                               item.transfer_syntax_uid, dataset_file=tmp_path / "nometa.dcm"))
    assert list(blobs.keys()) == [] and index.get(item.sop_instance_uid) is None
