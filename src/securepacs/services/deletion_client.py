"""The client side of ``securepacs delete``: find what a UID names, then delete it on the
server, over the server's DICOMweb listener with the client's certificate.

DIMSE has no delete service, so the deletion runs on the server under the identity of the
client certificate, through the DELETE routes of :mod:`securepacs.web.dicomweb.delete`.
Before it, a QIDO-RS search (PS3.18 10.6) finds the study a series or instance belongs to
(the DELETE URL names it) and the patient, for the confirmation prompt: the caller needs
``find`` as well as ``delete``.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from securepacs.errors import NotPermitted, PacsError
from securepacs.model.deletion import DeletionTarget
from securepacs.model.levels import Level
from securepacs.services.deletion import NothingToDelete
from securepacs.services.scuport import ServerUnreachable

__all__ = ["Located", "RemoteDeletion"]

_MAX_BODY = 4 << 20
_TAGS = {"PatientName": "00100010", "PatientID": "00100020", "StudyInstanceUID": "0020000D",
         "SeriesInstanceUID": "0020000E", "NumberOfStudyRelatedInstances": "00201208",
         "NumberOfSeriesRelatedInstances": "00201209", "StudyDate": "00080020",
         "StudyDescription": "00081030"}


@dataclass(frozen=True)
class Located:
    """What a UID names on the server: its study and series, the patient, a count."""

    target: DeletionTarget
    patient_name: str
    patient_id: str
    study_date: str = ""
    study_description: str = ""
    instances: int | None = None


def _value(item: dict[str, Any], keyword: str) -> str:
    element = item.get(_TAGS[keyword]) or {}
    values = element.get("Value") or []
    if not values:
        return ""
    first = values[0]
    if isinstance(first, dict):  # PN: {"Alphabetic": ...}
        return str(first.get("Alphabetic") or "")
    return str(first)


class RemoteDeletion:
    """Delete on the DICOMweb listener at `host`:`port` under `base` (e.g. ``/dicomweb``).

    Parameters
    ----------
    context : ssl.SSLContext
        Verifies the server against the CA and presents the client certificate
        (:func:`securepacs.pki.tlspolicy.client_context`).
    """

    def __init__(self, host: str, port: int, base: str, context: Any, *,
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.base = host, port, "/" + base.strip("/")
        self.context, self.timeout = context, timeout

    @property
    def where(self) -> str:
        return f"https://{self.host}:{self.port}{self.base}"

    def _request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                           context=self.context)
        try:
            conn.request(method, self.base + path,
                         headers={"Accept": "application/dicom+json"})
            response = conn.getresponse()
            return response.status, response.read(_MAX_BODY)
        except OSError as exc:
            tls = getattr(exc, "reason", None)  # ssl.SSLError: TLS failed
            if tls:
                raise ServerUnreachable(
                    f"TLS with the DICOMweb service at {self.where} failed: {tls} (is "
                    "it the server's DICOMweb port, and does --ca name the CA that issued its "
                    "certificate?)") from None
            raise ServerUnreachable(f"cannot reach the DICOMweb service at {self.where}: "
                                    f"{exc.strerror or exc}") from None
        except http.client.HTTPException as exc:
            raise PacsError(f"the DICOMweb service at {self.where} answered something that "
                            f"is not HTTP ({type(exc).__name__})") from None
        finally:
            conn.close()

    def _raise(self, status: int, body: bytes, what: str) -> None:
        try:
            reason = str(json.loads(body).get("error") or "")
        except (ValueError, AttributeError):
            reason = ""
        if status == 404:
            raise NothingToDelete(f"no {what} in the archive")
        if status in (401, 403):
            raise NotPermitted(reason or f"the server refused ({status})")
        raise PacsError(f"the server answered {status}" + (f": {reason}" if reason else ""))

    def locate(self, target: DeletionTarget) -> Located:
        """The study (and series) `target` lies in, and its patient (QIDO-RS).

        Raises
        ------
        NothingToDelete
            The caller sees no such entity.
        NotPermitted, ServerUnreachable, PacsError
        """
        fields = ["PatientName", "PatientID", "StudyInstanceUID", "StudyDate",
                  "StudyDescription"]
        if target.level is Level.STUDY:
            path, key = "/studies", "StudyInstanceUID"
            fields.append("NumberOfStudyRelatedInstances")
        elif target.level is Level.SERIES:
            path, key = "/series", "SeriesInstanceUID"
            fields.append("NumberOfSeriesRelatedInstances")
        else:
            path, key = "/instances", "SOPInstanceUID"
            fields.append("SeriesInstanceUID")
        query = urlencode([(key, target.uid), *(("includefield", f) for f in fields),
                           ("limit", "2")])
        status, body = self._request("GET", f"{path}?{query}")
        if status not in (200, 204):
            self._raise(status, body, target.describe())
        try:
            found = json.loads(body) if status == 200 and body.strip() else []
        except ValueError:
            raise PacsError("the server answered the search without DICOM JSON") from None
        if not isinstance(found, list) or not found:
            raise NothingToDelete(f"no {target.describe()} in the archive")
        item = found[0]
        study = _value(item, "StudyInstanceUID")
        if not study:
            raise PacsError("the server's search result names no study")
        count = _value(item, "NumberOfStudyRelatedInstances" if target.level is Level.STUDY
                       else "NumberOfSeriesRelatedInstances")
        located = DeletionTarget(target.level, target.uid,
                                 study_uid=study if target.level is not Level.STUDY else None,
                                 series_uid=_value(item, "SeriesInstanceUID") or None
                                 if target.level is Level.IMAGE else None)
        return Located(located, _value(item, "PatientName"), _value(item, "PatientID"),
                       _value(item, "StudyDate"), _value(item, "StudyDescription"),
                       int(count) if count.isdigit() else
                       (1 if target.level is Level.IMAGE else None))

    def delete(self, target: DeletionTarget, *, reason: str | None = None) -> None:
        """DELETE the resource of `target` (its study and series UIDs filled by :meth:`locate`).

        Raises
        ------
        NothingToDelete, NotPermitted, ServerUnreachable, PacsError
        """
        path = "/studies/" + quote(target.study_uid or target.uid)
        if target.level is Level.SERIES:
            path += "/series/" + quote(target.uid)
        elif target.level is Level.IMAGE:
            if target.series_uid is None:
                raise ValueError("an instance's series is needed to delete it")
            path += f"/series/{quote(target.series_uid)}/instances/{quote(target.uid)}"
        if reason:
            path += "?" + urlencode({"reason": reason})
        status, body = self._request("DELETE", path)
        if status not in (200, 204):
            self._raise(status, body, target.describe())
