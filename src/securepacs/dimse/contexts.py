"""Presentation contexts the server accepts and proposes (PS3.4, PS3.5 Section 10, PS3.7 D.3).

Storage accepts the common transfer syntaxes and stores what arrives as-is. With
``accept_unknown_storage`` (on by default) a SOP Class UID we do not know (a private class,
or one newer than pydicom's UID dictionary) is accepted as a storage class too: the
standard's Storage Service Class (PS3.4 B.4.1) lets an SCP store any composite instance
at Level 2 ("full") conformance, and its common attributes are all the index needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydicom import uid
from pydicom._uid_dict import UID_dictionary
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from securepacs.model.levels import Root

UNCOMPRESSED = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
)

#: What Storage accepts: uncompressed, deflated and the common compressed syntaxes.
STORAGE_TRANSFER_SYNTAXES = (
    *UNCOMPRESSED,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
    uid.MPEG2MPML,
    uid.MPEG4HP41,
    uid.HEVCMP51,
)

#: Site policies for the transfer syntax of a presentation context (``accept_compressed``):
#: ``as-proposed`` takes the requestor's first proposed syntax that we support (the
#: requestor knows what it holds: a modality proposing JPEG-LS first sends JPEG-LS, a
#: ``getscu +xw`` proposing JPEG 2000 first can then receive what is stored as JPEG 2000);
#: ``prefer`` takes the first proposed compressed syntax, else the first proposed;
#: ``uncompressed`` takes the first proposed uncompressed syntax, else the first proposed.
#: Where the choice falls on Implicit VR Little Endian, Explicit VR Little Endian is taken
#: whenever it was proposed.
TRANSFER_SYNTAX_POLICIES = ("as-proposed", "prefer", "uncompressed")
_NOT_COMPRESSED = frozenset({*UNCOMPRESSED, uid.ExplicitVRBigEndian, uid.DeflatedExplicitVRLittleEndian})


def choose_transfer_syntax(proposed: Sequence[str], supported: Iterable[str],
                           policy: str = "as-proposed") -> str | None:
    """The transfer syntax to accept for one presentation context (PS3.8 9.3.3.2: the
    acceptor picks one of those proposed), or None when we support none of them.

    Parameters
    ----------
    proposed : sequence of str
        The requestor's transfer syntaxes, in its order of preference.
    supported : iterable of str
        What we accept for the context's abstract syntax.
    policy : str
        One of :data:`TRANSFER_SYNTAX_POLICIES`.
    """
    allowed = set(supported)
    candidates = [ts for ts in proposed if ts in allowed]
    if not candidates:
        return None
    if policy == "prefer":
        first = next((ts for ts in candidates if ts not in _NOT_COMPRESSED), candidates[0])
    elif policy == "uncompressed":
        first = next((ts for ts in candidates if ts in UNCOMPRESSED), candidates[0])
    else:
        first = candidates[0]
    if first == uid.ImplicitVRLittleEndian and uid.ExplicitVRLittleEndian in candidates:
        # Explicit VR Little Endian carries everything Implicit VR does (VRs of private
        # elements included) and is what most instances are stored in: a C-GET can then
        # send them as stored instead of re-encoding them. Big Endian and Deflated, when
        # proposed first, are taken as proposed: an instance stored so is then sent as is.
        return uid.ExplicitVRLittleEndian
    return first


FIND_MODELS = {
    PatientRootQueryRetrieveInformationModelFind: Root.PATIENT,
    StudyRootQueryRetrieveInformationModelFind: Root.STUDY,
}
MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: Root.PATIENT,
    StudyRootQueryRetrieveInformationModelMove: Root.STUDY,
}
GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: Root.PATIENT,
    StudyRootQueryRetrieveInformationModelGet: Root.STUDY,
}


def storage_sop_classes() -> list[str]:
    """Every storage SOP class: pynetdicom's current ones and the retired ones of PS3.4
    (e.g. the retired Ultrasound Image Storage ``1.2.840.10008.5.1.4.1.1.6`` that older
    modalities still send), from pydicom's UID dictionary."""
    current = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    known = set(current)
    retired = [
        uid_ for uid_, (name, kind, _info, is_retired, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and is_retired and "Storage" in name and "Commitment" not in name
        and uid_ not in known
    ]
    return current + sorted(retired)


_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")


def could_be_storage(sop_class: str) -> bool:
    """True when `sop_class` may be accepted as an unknown storage SOP class: a well-formed
    UID (PS3.5 9.1, at most 64 characters) that pydicom's dictionary does not name as
    something else (a known non-storage SOP class, a transfer syntax, a frame of reference
    ...). Known storage classes are in :func:`storage_sop_classes` already."""
    if len(sop_class) > 64 or not _UID.fullmatch(sop_class):
        return False
    entry = UID_dictionary.get(sop_class)
    if entry is None:
        return True
    name, kind = entry[0], entry[1]
    return kind == "SOP Class" and "Storage" in name and "Commitment" not in name


def supported_contexts() -> list[tuple[str, tuple[str, ...], bool]]:
    """(abstract syntax, transfer syntaxes, allow SCP/SCU role selection) for the acceptor."""
    out: list[tuple[str, tuple[str, ...], bool]] = [(Verification, UNCOMPRESSED, False)]
    for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        out.append((model, UNCOMPRESSED, False))
    for sop_class in storage_sop_classes():
        # role selection lets a C-GET requestor be the Storage SCP on this association
        out.append((sop_class, STORAGE_TRANSFER_SYNTAXES, True))
    return out


def sending_contexts(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, tuple[str, ...]]]:
    """Contexts to propose for sending stored instances, given (SOP class, stored TS):
    (abstract syntax, transfer syntaxes) each.

    Each stored transfer syntax is offered as it is; uncompressed instances also offer
    the other uncompressed syntaxes so that a peer may pick either.
    """
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        for candidate in (ts, *UNCOMPRESSED) if ts in UNCOMPRESSED else (ts,):
            if candidate not in syntaxes:
                syntaxes.append(candidate)
    contexts: list[tuple[str, tuple[str, ...]]] = []
    for sop_class, syntaxes in by_class.items():
        # one context per compressed syntax: the peer may accept some and not others
        contexts += [(sop_class, (ts,)) for ts in syntaxes if ts not in UNCOMPRESSED]
        if rest := tuple(t for t in syntaxes if t in UNCOMPRESSED):
            contexts.append((sop_class, rest))
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} presentation contexts needed, 128 is the maximum")
    return contexts
