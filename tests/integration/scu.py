"""A pynetdicom client over TLS for the tests that DCMTK 3.6.7 cannot drive (C-MOVE, C-GET)."""

from __future__ import annotations

import ssl
from pathlib import Path

from harness import HOST
from pynetdicom import AE, build_role
from pynetdicom.association import Association
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)


def client_tls(key: Path, cert: Path, ca: Path) -> ssl.SSLContext:
    from securepacs.pki.tlspolicy import client_context

    return client_context(ca, cert, key)


def associate(port: int, key: Path, cert: Path, ca: Path, *, ae_title: str = "TESTSCU",
              called: str = "SECUREPACS", get_classes: tuple[str, ...] = (),
              handlers: list | None = None,
              get_syntaxes: tuple[str, ...] | None = None) -> Association:  # noqa: ANN001
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    storage = list(get_classes) or [cx.abstract_syntax for cx in StoragePresentationContexts[:100]]
    for sop in storage:
        if get_syntaxes is not None and sop in get_classes:
            ae.add_requested_context(sop, list(get_syntaxes))
        else:
            ae.add_requested_context(sop)
    for sop in (Verification, StudyRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelMove,
                StudyRootQueryRetrieveInformationModelGet):
        ae.add_requested_context(sop)
    # C-GET: this AE is the Storage SCP on the same association
    roles = [build_role(c, scp_role=True) for c in get_classes]
    assoc = ae.associate(HOST, port, ae_title=called, ext_neg=roles or None,
                         tls_args=(client_tls(key, cert, ca), None),
                         evt_handlers=handlers)
    assert assoc.is_established, "association with the test server failed"
    return assoc


__all__ = ["associate", "CTImageStorage"]
