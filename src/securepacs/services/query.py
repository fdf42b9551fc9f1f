"""Query and retrieve use cases: identifier in, matches or instances out (PS3.4 C.4).

Identifiers arrive as pydicom data sets; :func:`to_query` turns one into the pure
:class:`~securepacs.model.query.Query`, :class:`QueryService` answers C-FIND,
:class:`RetrieveService` lists and loads the instances a C-MOVE / C-GET must send.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from securepacs.errors import QueryError
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.record import StoredInstance
from securepacs.model.tenancy import Visibility
from securepacs.services.part10 import as_text
from securepacs.services.ports import BlobPort, IndexPort
from securepacs.services.query_files import FileKeys

_SKIP = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}
_NUMERIC_VRS = {"US", "UL", "SS", "SL", "UV", "SV", "FL", "FD"}
_UTF8 = "ISO_IR 192"


def to_query(identifier: Dataset, root: Root) -> Query:
    """The pure query an identifier asks for.

    Raises
    ------
    QueryError
        No or an unknown Query/Retrieve Level, or one the model does not have.
    """
    raw_level = as_text(identifier.get("QueryRetrieveLevel", "")).upper()
    try:
        level = Level(raw_level)
    except ValueError:
        raise QueryError(f"unknown Query/Retrieve Level {raw_level!r}") from None
    keys = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in _SKIP or elem.tag.group == 0x0002:
            continue
        if elem.VR == "SQ":
            keys.append(Key(keyword, "SQ", ""))
            continue
        keys.append(Key(keyword, elem.VR, as_text(elem.value)))
    try:
        return Query(root=root, level=level, keys=tuple(keys))
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def _set(ds: Dataset, keyword: str, text: str | None) -> None:
    vr = dictionary_VR(tag_for_keyword(keyword))  # type: ignore[arg-type]
    if vr == "SQ":
        ds.add_new(keyword, "SQ", Sequence())
        return
    if not text:
        ds.add_new(keyword, vr, None)
        return
    if vr in _NUMERIC_VRS:
        parts = [int(p) if vr not in ("FL", "FD") else float(p) for p in text.split("\\")]
        ds.add_new(keyword, vr, parts if len(parts) > 1 else parts[0])
    elif "\\" in text and vr not in ("LT", "ST", "UT"):
        ds.add_new(keyword, vr, text.split("\\"))
    else:
        ds.add_new(keyword, vr, text)


class QueryService:
    """Answers C-FIND identifiers from the index."""

    def __init__(self, index: IndexPort, *, ae_title: str, max_results: int = 10000,
                 blobs: BlobPort | None = None):
        self._index = index
        self._ae_title = ae_title
        self._max = max_results
        self._blobs = blobs

    def find(self, identifier: Dataset, root: Root, *, visibility: Visibility,
             owned: list[tuple[str, str]] | None = None) -> Iterator[Dataset]:
        """One response identifier per match the caller sees (`visibility`, from
        :class:`securepacs.services.tenancy.Tenancy`), with the keys asked for filled in (keys
        the index does not keep matched and filled from a stored file,
        :mod:`securepacs.services.query_files`, when a blob store is given).

        `owned`, given, gets one (owner organisation, Study Instance UID) pair per
        identifier yielded (``patient <PatientID>`` for a PATIENT-level match): what
        :meth:`securepacs.services.tenancy.Tenancy.audit_crossing` records."""
        query = to_query(identifier, root)
        owners: list[str] | None = [] if owned is not None else None
        rows = self._index.find(query, limit=self._max, visibility=visibility, owners=owners)
        files = (FileKeys(identifier, query, index=self._index, blobs=self._blobs,
                          visibility=visibility)
                 if self._blobs is not None else None)
        wanted = query.return_keywords()
        if files:
            wanted = tuple(k for k in wanted if k not in files.keywords)
        for number, row in enumerate(rows):
            ds = Dataset()
            ds.QueryRetrieveLevel = query.level.value
            if any(not v.isascii() for v in row.values()):
                ds.SpecificCharacterSet = _UTF8
            elif "SpecificCharacterSet" in identifier:
                ds.SpecificCharacterSet = identifier.SpecificCharacterSet
            for keyword in wanted:
                if keyword == "RetrieveAETitle":
                    ds.RetrieveAETitle = self._ae_title
                    continue
                _set(ds, keyword, row.get(keyword))
            if files and not files.fill(row, ds):
                continue
            if files:
                ds.SpecificCharacterSet = _UTF8  # values from the file may be non-ASCII
            if owned is not None and owners is not None:
                owned.append((owners[number], row.get("StudyInstanceUID")
                              or f"patient {row.get('PatientID', '')}"))
            yield ds

    def unsupported_keys(self, identifier: Dataset, root: Root) -> list[str]:
        """Keys with a value that cannot be matched (C-FIND then answers Pending 0xFF01,
        PS3.4 C.4.1.1.4): values of binary or unknown VR, or, without a blob store, any
        key the index does not keep."""
        query = to_query(identifier, root)
        if self._blobs is None:
            return FileKeys(identifier, query, index=self._index, blobs=None).matched
        return FileKeys(identifier, query, index=self._index, blobs=self._blobs).unsupported


class RetrieveService:
    """Finds the instances a C-MOVE / C-GET asks for and loads them from the blob store."""

    def __init__(self, index: IndexPort, blobs: BlobPort):
        self._index = index
        self._blobs = blobs

    def instances(self, identifier: Dataset, root: Root, *,
                  visibility: Visibility) -> list[StoredInstance]:
        """Every stored instance under what the identifier names that the caller may
        retrieve (`visibility`; read-only shares never count here)."""
        query = to_query(identifier, root)
        if not query.constraints():
            raise QueryError("a retrieve needs at least one unique key")
        return self._index.instances(query, visibility=visibility.for_retrieve())

    def read(self, instance: StoredInstance) -> bytes:
        """The instance's Part 10 bytes, exactly as stored."""
        return self._blobs.read(instance.blob_key)

    def open(self, instance: StoredInstance) -> BinaryIO:
        """The instance's Part 10 file, open to read in pieces (the caller closes it); a
        blob store that cannot stream gives the whole blob in memory."""
        open_read = getattr(self._blobs, "open_read", None)
        if open_read is not None:
            return open_read(instance.blob_key)  # type: ignore[no-any-return]
        return BytesIO(self.read(instance))

    def load(self, instance: StoredInstance) -> Dataset:
        """The stored instance as a data set (file meta included)."""
        return dcmread(BytesIO(self.read(instance)))
