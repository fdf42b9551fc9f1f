"""C-FIND keys the index does not keep, matched and returned from a stored file (PS3.4 C.2.2).

The index keeps the attributes of :data:`~securepacs.model.record.LEVEL_ATTRIBUTES`; C-FIND
answers from it alone while an identifier asks only for those. Any other key of the
identifier - a standard attribute the index does not keep (``ImageType``), a sequence
(``ProcedureCodeSequence``, matched per PS3.4 C.2.2.2.6), a private attribute (returned
with its private creator, PS3.4 C.4.1.1.3.2 lets the SCP return private keys it
supports) - is matched and returned from one stored instance of each matching entity:
the instance itself at IMAGE level, any instance of the series / study / patient above
it (the attributes of those levels are the same in each of their instances).

Speed: such a query reads the header of one file per candidate match (pixel data and
values over 64 KB are not read), on top of the index query. Identifiers that ask only
for what the index keeps cost nothing more.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from securepacs.errors import QueryError
from securepacs.model import matching
from securepacs.model.levels import Level, Root
from securepacs.model.query import Key, Query
from securepacs.model.record import UNIQUE_KEY, StoredInstance, level_of
from securepacs.model.tenancy import Visibility
from securepacs.services.part10 import as_text
from securepacs.services.ports import BlobPort, IndexPort

log = logging.getLogger(__name__)

_SKIP = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC",
         "RetrieveAETitle"}
#: Values bigger than this are not read from the file (a return key of that size is left
#: out of the header read; matching on it is not meaningful anyway).
_DEFER = 64 * 1024
_UNMATCHABLE_VRS = {"UN", "OB", "OW", "OF", "OD", "OL", "OV", "SQ"}


def _name(elem: DataElement) -> str:
    return elem.keyword or f"{elem.tag.group:04X}{elem.tag.element:04X}"


def _item_keys(item: Dataset) -> tuple[matching.ItemKey, ...]:
    keys = []
    for elem in item:
        if elem.VR == "SQ":
            inner = _item_keys(elem.value[0]) if len(elem.value) else ()
            keys.append(matching.ItemKey(_name(elem), "SQ", items=inner))
        elif elem.VR not in _UNMATCHABLE_VRS:
            keys.append(matching.ItemKey(_name(elem), elem.VR, as_text(elem.value)))
    return tuple(keys)


def _stored_item(item: Dataset) -> matching.StoredItem:
    out: dict[str, str | list[matching.StoredItem]] = {}
    for elem in item:
        if elem.VR == "SQ":
            out[_name(elem)] = [_stored_item(i) for i in elem.value]
        elif elem.VR not in _UNMATCHABLE_VRS:
            out[_name(elem)] = as_text(elem.value)
    return out


def _project(item: Dataset, asked: Dataset | None) -> Dataset:
    """The stored item with only the attributes the key's item asked for (all of them
    when the key had no item or an empty one)."""
    if asked is None or len(asked) == 0:
        return copy.deepcopy(item)
    out = Dataset()
    for elem in asked:
        if elem.tag in item:
            out.add(copy.deepcopy(item[elem.tag]))
        else:
            out.add_new(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None)
    return out


class FileKeys:
    """The keys of one identifier that are answered from stored files.

    Parameters
    ----------
    identifier : pydicom.dataset.Dataset
        The C-FIND identifier.
    query : Query
        What :func:`~securepacs.services.query.to_query` made of it.
    index, blobs
        Where the representative instance of a match is found and read.
    visibility : Visibility, optional
        What the caller may see: the representative instance is one of those (None: all).
    """

    def __init__(self, identifier: Dataset, query: Query, *, index: IndexPort,
                 blobs: BlobPort | None, visibility: Visibility | None = None) -> None:
        self._query = query
        self._index = index
        self._visibility = visibility
        self._blobs = blobs
        self.elements: list[DataElement] = []
        self._matchers: dict[int, matching.Matcher] = {}
        self._items: dict[int, tuple[matching.ItemKey, ...]] = {}
        #: keys with a value that cannot be matched (binary or unknown VR)
        self.unsupported: list[str] = []
        try:
            for elem in identifier:
                if (elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0
                        or elem.keyword in _SKIP):
                    continue
                if not (elem.tag.is_private or elem.VR == "SQ" or level_of(elem.keyword) is None):
                    continue
                self.elements.append(elem)
                if elem.VR == "SQ":
                    keys = _item_keys(elem.value[0]) if len(elem.value) else ()
                    if not all(k.is_universal() for k in keys):
                        self._items[int(elem.tag)] = keys
                elif elem.VR not in _UNMATCHABLE_VRS:
                    matcher = matching.parse(elem.VR, as_text(elem.value))
                    if not isinstance(matcher, matching.Universal):
                        self._matchers[int(elem.tag)] = matcher
                elif not elem.is_empty:
                    self.unsupported.append(_name(elem))
        except ValueError as exc:
            raise QueryError(str(exc)) from None

    @property
    def matched(self) -> list[str]:
        """Every key with a value that these file keys would match (or cannot)."""
        return sorted({_name(e) for e in self.elements if int(e.tag) in self._matchers
                       or int(e.tag) in self._items} | set(self.unsupported))

    def __bool__(self) -> bool:
        return bool(self.elements)

    @property
    def keywords(self) -> set[str]:
        """Keywords answered here (the index's answer leaves them out)."""
        return {e.keyword for e in self.elements if e.keyword}

    def fill(self, row: dict[str, str], out: Dataset) -> bool:
        """Match the file keys against the representative instance of `row` and add them
        to the response `out`; False when the entity does not match."""
        with self._source(row) as source:
            return self._fill(source, out)

    def _fill(self, source: Dataset | None, out: Dataset) -> bool:
        for elem in self.elements:
            stored = source.get(elem.tag) if source is not None else None
            tag = int(elem.tag)
            if elem.VR == "SQ":
                items = list(stored.value) if stored is not None and stored.VR == "SQ" else []
                keys = self._items.get(tag)
                positions = (matching.matching_items(keys, [_stored_item(i) for i in items])
                             if keys is not None else list(range(len(items))))
                if keys is not None and not positions:
                    return False
                asked = elem.value[0] if len(elem.value) else None
                out.add_new(elem.tag, "SQ", Sequence([_project(items[i], asked)
                                                      for i in positions]))
                continue
            matcher = self._matchers.get(tag)
            if matcher is not None and not matcher.matches(
                    as_text(stored.value) if stored is not None else None):
                return False
            if stored is not None and not isinstance(stored, DataElement):
                stored = None  # a raw element pydicom could not convert
            out.add(copy.deepcopy(stored) if stored is not None
                    else DataElement(elem.tag, elem.VR, None))
        return True

    @contextlib.contextmanager
    def _source(self, row: dict[str, str]) -> Iterator[Dataset | None]:
        """The header of the representative instance of `row`, its file open while used
        (values over 64 KB are read only when asked for); None when there is none."""
        instance = self._instance(row)
        if instance is None:
            yield None
            return
        try:
            fp = self._open(instance.blob_key)
        except Exception as exc:  # noqa: BLE001 - an unreadable file answers nothing more
            log.warning("C-FIND: cannot read instance %s: %s", instance.sop_instance_uid, exc)
            yield None
            return
        with fp:
            try:
                ds = dcmread(fp, stop_before_pixels=True, defer_size=_DEFER)
            except Exception as exc:  # noqa: BLE001
                log.warning("C-FIND: cannot read instance %s: %s", instance.sop_instance_uid,
                            exc)
                ds = None
            yield ds

    def _instance(self, row: dict[str, str]) -> StoredInstance | None:
        level = self._query.level
        unique = UNIQUE_KEY[level]
        value = row.get(unique, "")
        if not value:
            return None
        instance: StoredInstance | None
        if level is Level.IMAGE:
            instance = self._index.get(value, visibility=self._visibility)
        else:
            vr = "LO" if unique == "PatientID" else "UI"
            root = self._query.root if level in self._query.root.levels else Root.STUDY
            found = self._index.instances(Query(root=root, level=level,
                                                keys=(Key(unique, vr, value),)),
                                          visibility=self._visibility)
            instance = found[0] if found else None
        return instance

    def _open(self, key: str) -> BinaryIO:
        assert self._blobs is not None
        open_read: Callable[[str], BinaryIO] | None = getattr(self._blobs, "open_read", None)
        if open_read is not None:
            return open_read(key)
        return io.BytesIO(self._blobs.read(key))
