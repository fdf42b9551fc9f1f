"""The small Protocols through which services use the index and the blob store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from securepacs.model.query import Query
from securepacs.model.record import InstanceRecord, StoredInstance
from securepacs.model.tenancy import Visibility


class AddResultLike(Protocol):
    outcome: str
    previous_blob_key: str | None


class IndexPort(Protocol):
    def add(self, record: InstanceRecord, *, replace: bool = False,
            ready: Callable[[], object] | None = None, foreign: str = "") -> Any: ...
    def get(self, sop_instance_uid: str, *,
            visibility: Visibility | None = None) -> StoredInstance | None: ...
    def find(self, query: Query, *, limit: int | None = None,
             visibility: Visibility | None = None,
             owners: list[str] | None = None) -> list[dict[str, str]]: ...
    def instances(self, query: Query, *,
                  visibility: Visibility | None = None) -> list[StoredInstance]: ...
    def referenced_blob_keys(self, keys: Iterable[str]) -> set[str]: ...


class BlobPort(Protocol):
    #: Where a large incoming object is best written before :meth:`put_file` (a folder on
    #: the store's own filesystem, so that the file can be moved in); None: anywhere.
    spool_folder: Path | None

    def new_key(self) -> str: ...
    def put(self, key: str, chunks: bytes | bytearray | Iterable[bytes | bytearray]) -> int: ...
    def put_file(self, key: str, path: Path) -> int: ...
    def read(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def keys(self, *, older_than: float = 0.0, now: float | None = None) -> Iterator[str]: ...
    def sweep_temp(self) -> int: ...
