"""A large received data set (the network layer's temp file, dimse/spool.py) is checked
in place, reading element headers only (never the pixel data), and moved into the blob
store without a copy."""

from __future__ import annotations

import mmap
import os
import resource
import sys
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from factories import make_dataset  # noqa: E402
from securepacs.blobs.filesystem import FileBlobStore  # noqa: E402
from securepacs.index.repository import SqlIndex  # noqa: E402
from securepacs.model.levels import Level  # noqa: E402
from securepacs.services import part10  # noqa: E402
from securepacs.services.ingest import (  # noqa: E402
    IngestService,
    Outcome,
    Received,
    _check_file,
)

PIXELS = 2048 * 4096 * 2  # 16 MiB of pixel data: 4096 pages


def large(folder: Path, name: str = "rx1.1.tmp") -> tuple[Received, Path]:
    """A C-STORE as the network layer delivers a large one: our Part 10 header, then
    the data set, in a file of `folder`."""
    ds = make_dataset(rows=2048, columns=4096)
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    dataset = raw[144 + int.from_bytes(raw[140:144], "little"):]
    assert len(dataset) > PIXELS
    path = folder / name
    path.write_bytes(part10.header_for(ds.SOPClassUID, ds.SOPInstanceUID,
                                       ds.file_meta.TransferSyntaxUID, "TESTSCU") + dataset)
    item = Received(b"", ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID,
                    "TESTSCU", dataset_file=path)
    return item, path


def evict(path: Path) -> None:
    """Make the file durable and drop it from the page cache: what is read next comes
    from the disk and is counted in the thread's block input."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_from_disk() -> int:
    """Bytes this thread has read from the disk so far (512-byte blocks)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_inblock * 512


def test_the_check_reads_element_headers_not_the_pixel_data(tmp_path: Path) -> None:
    item, path = large(tmp_path)
    evict(path)
    before = read_from_disk()
    offset, values = _check_file(path, item.transfer_syntax_uid)
    checked = read_from_disk() - before
    assert values is not None and values[Level.IMAGE]["SOPInstanceUID"] == item.sop_instance_uid
    assert offset == len(part10.header_for(item.sop_class_uid, item.sop_instance_uid,
                                           item.transfer_syntax_uid, "TESTSCU"))
    # the control: touching every page of the same mapping reads the whole file
    evict(path)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        before = read_from_disk()
        touched = sum(mm[i] for i in range(0, len(mm), mmap.PAGESIZE))
        whole = read_from_disk() - before
    assert touched >= 0 and whole >= PIXELS
    assert checked < PIXELS // 8, f"the check read {checked} bytes of {whole}"


def test_a_spooled_file_becomes_the_blob_without_a_copy(tmp_path: Path) -> None:
    index = SqlIndex(f"sqlite:///{tmp_path / 'index.sqlite'}")
    index.create_schema()
    blobs = FileBlobStore(tmp_path / "blobs")
    service = IngestService(index, blobs)
    assert service.spool_folder is not None
    item, path = large(service.spool_folder)
    inode, content = path.stat().st_ino, path.read_bytes()
    assert service.store(item) is Outcome.STORED
    stored = index.get(item.sop_instance_uid)
    assert stored is not None
    blob = blobs.path(stored.blob_key)
    assert blob.stat().st_ino == inode  # renamed in, not copied
    assert blob.read_bytes() == content
    assert not path.exists()
    index.close()
