"""The viewer's HTML pages, as small functions of the values they show.

One responsibility: markup for :mod:`securepacs.web.viewer` (every value escaped): the unlock
form, the study / series list of the media (PS3.3 C.7 Patient, Study and Series attributes),
the image viewer shell (its script is ``static/viewer.js``), and the import pages with the
media's patient identity beside the new one (IHE Import Reconciliation Workflow).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from securepacs.services.archive_view import StudyList
from securepacs.services.media_import import ImportSummary
from securepacs.services.media_view import Catalog, SeriesEntry, StudyEntry

__all__ = ["archive_studies", "forbidden", "import_form", "import_status", "message",
           "not_permitted", "studies", "study", "unlock", "viewer", "with_base",
           "confirm_delete", "deleted"]


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _name(value: str) -> str:
    return value.replace("^", " ").strip()


def with_base(page: str, base: str) -> str:
    """`page` with ``<base href>`` set to `base` (every link in these pages is relative)."""
    return page.replace("<head>", f'<head><base href="{_e(base)}">', 1)


def _page(title: str, body: str, *, script: str = "", refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    tag = f'<script src="static/{script}" defer></script>' if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<title>{_e(title)} - securepacs viewer</title>'
            f'<link rel="stylesheet" href="static/viewer.css">{tag}</head>'
            f'<body><header><a href="./">securepacs viewer</a> <span>{_e(title)}</span></header>'
            f"<main>{body}</main></body></html>")


def forbidden() -> str:
    """The page for a request without the session key."""
    return _page("Not allowed", '<p class="error">Open the viewer with the address printed by '
                 "<code>securepacs view</code> (it carries this session's key).</p>")


def not_permitted(who: str, missing: str) -> str:
    """The page for a certificate admitted to the archive but not allowed to view images."""
    return _page("Not allowed", f'<p class="error" id="not-permitted">{_e(who)} may not view '
                 f"images here: viewing needs the {_e(missing)} permission(s) of its group. Ask "
                 "the archive's administrator.</p>")


def message(text: str) -> str:
    """A page with one error line and a way back."""
    return _page("Viewer", f'<p class="error">{_e(text)}</p><p><a href="./">Back</a></p>')


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(token)}">' if token else ""


def unlock(media: str, error: str = "", csrf: str = "") -> str:
    """The password / key file form for encrypted media, with the last error if any."""
    err = f'<p class="error" id="error" role="alert">{_e(error)}</p>' if error else ""
    return _page("Encrypted media", f"""
<h1>Encrypted media: {_e(media)}</h1>
<p>The images on this media are encrypted (DICOM Secure Media). Type the password you received
by a separate route, or give the path of your private key file. Nothing decrypted is written
to disk.</p>
{err}
<form method="post" action="unlock" id="unlock" autocomplete="off">{_csrf(csrf)}
<label>Password <input type="password" name="password" id="password" autofocus></label>
<label>or key file (PEM) <input type="text" name="key_path" id="key_path" size="50"></label>
<button type="submit" id="open">Open</button>
</form>""")


def _series_row(s: SeriesEntry) -> str:
    uid = quote(s.uid, safe="")
    return (f'<tr class="series"><td><a href="series/{uid}"><img class="thumb" alt="no preview" '
            f'src="thumb/{uid}" width="96" height="96" loading="lazy"></a></td>'
            f"<td>{_e(s.number)}</td><td>{_e(s.modality)}</td>"
            f'<td><a href="series/{uid}" class="open-series">{_e(s.description or "(no description)")}'
            f'</a></td><td class="count">{s.images}</td></tr>')


def studies(catalog: Catalog) -> str:
    """The study / series list of the media, with its unreadable files named first."""
    parts = [f"<h1>{_e(catalog.name)}</h1>"]
    if catalog.errors:
        items = "".join(f"<li>{_e(e)}</li>" for e in catalog.errors)
        parts.append(f'<div class="error" id="media-errors" role="alert"><p>{len(catalog.errors)} '
                     f"file(s) could not be read; everything else is shown.</p><ul>{items}</ul></div>")
    parts.append(_integrity(catalog))
    if catalog.studies:
        parts.append('<p><a class="button" href="import" id="import-link">Import into a PACS'
                     "</a></p>")
    parts.extend(_study_section(study) for study in catalog.studies)
    return _page(catalog.name, "".join(parts))


def _integrity(catalog: Catalog) -> str:
    """Whether each file's integrity was verified (PS3.15 D.1.1 DigestedData) or not protected."""
    if not catalog.encrypted:
        return ('<p class="integrity" id="integrity">Plain DICOM files (not encrypted): '
                "no integrity protection.</p>")
    if not catalog.unprotected:
        return (f'<p class="integrity" id="integrity">Integrity verified: the digest of each of '
                f"the {catalog.verified} file(s) opened was checked.</p>")
    items = "".join(f"<li>{_e(p)}</li>" for p in catalog.unprotected[:50])
    more = len(catalog.unprotected) - 50
    tail = f"<li>... and {more} more</li>" if more > 0 else ""
    return (f'<div class="error" id="integrity" role="alert"><p>Integrity NOT protected for '
            f"{len(catalog.unprotected)} file(s): they hold plain content without a digest "
            "(written by another program), so an alteration would go unnoticed. Integrity "
            f"verified for {catalog.verified} file(s).</p><ul>{items}{tail}</ul></div>")


def _study_section(study: StudyEntry) -> str:
    rows = "".join(_series_row(s) for s in study.series)
    return f"""<section class="study">
<h2><span class="patient-name">{_e(_name(study.patient_name))}</span>
 <span class="patient-id">ID {_e(study.patient_id)}</span>
 <span>{_e(_date(study.date))}</span> <span>{_e(study.modalities)}</span>
 <span class="study-description">{_e(study.description)}</span>
 <span class="count">{study.images} image(s)</span></h2>
<table><thead><tr><th></th><th>Series</th><th>Modality</th><th>Description</th><th>Images</th>
</tr></thead><tbody>{rows}</tbody></table></section>"""


def archive_studies(name: str, listing: StudyList, search: str = "") -> str:
    """The archive's study list (newest first, or a Patient ID / name search), one row each."""
    rows = "".join(
        f'<tr class="archive-study"><td><a class="open-study" href="study/{quote(s.uid, safe="")}">'
        f'{_e(_name(s.patient_name) or "(no name)")}</a></td><td class="patient-id">'
        f"{_e(s.patient_id)}</td><td>{_e(_date(s.date))}</td>"
        f"<td>{_e(listing.modalities.get(s.uid, ''))}</td><td>{_e(s.description)}</td>"
        f"<td>{_e(s.accession)}</td><td class=\"count\">{listing.images.get(s.uid, 0)}</td></tr>"
        for s in listing.studies)
    shown = len(listing.studies)
    note = f"{shown} of {listing.matched} stud{'y' if listing.matched == 1 else 'ies'}"
    if listing.since:
        note += f" since {_date(listing.since)}"
    note += ", newest first"
    if listing.capped:
        note += " (only the first matches were scanned: narrow the search)"
    return _page(name, f"""<h1>{_e(name)}</h1>
<form method="get" action="./" id="search" role="search">
<label>Patient ID or name <input type="search" name="q" id="q" value="{_e(search)}"
 maxlength="64"></label> <button type="submit">Search</button></form>
<p id="list-note">{_e(note)}</p>
<table id="studies"><thead><tr><th>Patient</th><th>ID</th><th>Date</th><th>Modalities</th>
<th>Description</th><th>Accession</th><th>Images</th></tr></thead><tbody>{rows}</tbody></table>""")


def study(name: str, entry: StudyEntry, *, can_delete: bool = False) -> str:
    """One archived study: its series with a thumbnail each (and, for a caller who may
    delete it, a link to the deletion's confirmation page)."""
    delete = (f'<p><a class="delete-study" id="delete-study" href="study/'
              f'{quote(entry.uid, safe="")}/delete">Delete this study&hellip;</a></p>'
              if can_delete else "")
    return _page(f"{_name(entry.patient_name)} {_date(entry.date)}",
                 f'<p><a href="./">&larr; {_e(name)}</a></p>{_study_section(entry)}{delete}')


def confirm_delete(study_uid: str, patient_name: str, patient_id: str, instances: int,
                   csrf: str) -> str:
    """The confirmation of a study's deletion, naming its patient and study."""
    uid = quote(study_uid, safe="")
    return _page("Delete a study", f"""<h1>Delete this study?</h1>
<p id="delete-what">Patient <strong class="patient-name">{_e(_name(patient_name) or "(no name)")}
</strong> (ID <span class="patient-id">{_e(patient_id or "-")}</span>), study
<code class="study-uid">{_e(study_uid)}</code>: {instances} image(s).</p>
<p class="error">Deleting cannot be undone: the images leave the archive now.</p>
<form method="post" action="study/{uid}/delete" id="delete-form">{_csrf(csrf)}
<label>Reason (kept in the audit trail) <input type="text" name="reason" id="reason"
 maxlength="200" size="50"></label>
<button type="submit" id="confirm-delete">Delete the study</button>
<a href="study/{uid}">Cancel</a></form>""")


def deleted(study_uid: str, patient_name: str, patient_id: str, instances: int) -> str:
    """What a deletion removed."""
    return _page("Study deleted", f"""<p id="deleted">Deleted study <code>{_e(study_uid)}</code>
of patient {_e(_name(patient_name) or "(no name)")} (ID {_e(patient_id or "-")}):
{instances} image(s).</p><p><a href="./">Back to the archive</a></p>""")


def viewer(study: StudyEntry, series: SeriesEntry) -> str:
    """The image page of one series (CT presets for CT); ``viewer.js`` fills it."""
    presets = ""
    if series.modality == "CT":
        presets = ('<span class="presets">'
                   '<button data-wc="-600" data-ww="1500">Lung</button>'
                   '<button data-wc="400" data-ww="1800">Bone</button>'
                   '<button data-wc="40" data-ww="400">Soft tissue</button></span>')
    title = f"{_name(study.patient_name)} - {series.modality} {series.description}"
    return _page(title, f"""
<div id="viewer" data-series="{_e(series.uid)}">
 <div class="toolbar">
  <a href="./">&larr; Studies</a>
  <input type="range" id="slider" min="0" max="0" value="0" aria-label="image">
  <span id="position">-</span> Instance <span id="instance-number">-</span>
  <span id="window">-</span> {presets}
  <button id="reset">Reset</button> <button id="zoom-in">+</button> <button id="zoom-out">&minus;</button>
 </div>
 <div class="main">
  <div id="stage" title="wheel: next image; drag: window/level; shift+drag or right-drag: pan;
ctrl+wheel: zoom"><img id="image" alt="image" draggable="false">
   <p id="image-error" class="error" role="alert" hidden></p></div>
  <table id="tags"></table>
 </div>
</div>""", script="viewer.js")


def import_form(identities: Sequence[tuple[str, str, str, str]], destination: str,
                error: str = "", csrf: str = "") -> str:
    """The import form: each media patient, the new identity, the destination."""
    err = f'<p class="error" id="error" role="alert">{_e(error)}</p>' if error else ""
    first = identities[0] if identities else ("", "", "", "")
    options = "".join(
        f'<option value="{_e(pid)}" data-name="{_e(_name(name))}" data-issuer="{_e(issuer)}" '
        f'data-birth="{_e(birth)}">{_e(_name(name))} (ID {_e(pid)})</option>'
        for name, pid, issuer, birth in identities)
    rows = "".join(
        f'<tr class="media-patient"><td>{_e(_name(name))}</td><td class="media-patient-id">'
        f"{_e(pid)}</td><td>{_e(issuer)}</td><td>{_e(_date(birth))}</td></tr>"
        for name, pid, issuer, birth in identities)
    return _page("Import", f"""
<h1>Import into a PACS</h1>
{err}
<p>Destination: <strong id="destination">{_e(destination or "not configured")}</strong></p>
<form method="post" action="import" id="import-form">{_csrf(csrf)}
<table class="reconcile"><thead><tr><th></th><th>On the media</th><th>At your site (new)</th></tr>
</thead><tbody>
<tr><th>Patient</th><td><select name="from" id="from">{options}</select></td><td></td></tr>
<tr><th>Patient ID</th><td id="old-id">{_e(first[1])}</td>
 <td><input name="patient_id" id="patient_id" maxlength="64"></td></tr>
<tr><th>Issuer of Patient ID</th><td id="old-issuer">{_e(first[2])}</td>
 <td><input name="issuer" id="issuer" maxlength="64"></td></tr>
<tr><th>Patient's Name</th><td id="old-name">{_e(_name(first[0]))}</td>
 <td><input name="patient_name" id="patient_name" placeholder="unchanged"></td></tr>
<tr><th>Birth date (YYYYMMDD)</th><td id="old-birth">{_e(first[3])}</td>
 <td><input name="birth_date" id="birth_date" placeholder="unchanged" maxlength="8"></td></tr>
</tbody></table>
<p>All patients on the media:</p>
<table><thead><tr><th>Name</th><th>ID</th><th>Issuer</th><th>Birth date</th></tr></thead>
<tbody>{rows}</tbody></table>
<p>The original values are kept in each image (Original Attributes Sequence, and the old ID in
Other Patient IDs Sequence); UIDs do not change. Empty fields stay as on the media.</p>
<button type="submit" id="send">Send</button>
</form>""", script="viewer.js")


def import_status(done: int, total: int, summary: ImportSummary | None, error: str | None,
                  destination: str) -> str:
    """Progress (refreshing every second) while an import runs, then its summary."""
    if error is not None:
        return _page("Import", f'<h1>Import failed</h1><p class="error" id="error" role="alert">'
                     f'{_e(error)}</p><p><a href="import">Back</a></p>')
    if summary is None:
        return _page("Import", f'<h1>Importing to {_e(destination)}</h1><progress max="{total}" '
                     f'value="{done}"></progress> <span id="progress">{done} of {total}</span>',
                     refresh=1)
    lines = "".join(f"<li>{_e(path)}: {_e(reason)}</li>" for path, reason in summary.failed)
    stopped = (f'<p class="error" id="error" role="alert">Stopped: {_e(summary.stopped)}</p>'
               if summary.stopped else "")
    state = "done" if summary.ok else "incomplete"
    return _page("Import", f"""<h1 id="import-result" data-state="{state}">Import {state}</h1>
{stopped}<p id="summary">{summary.total} image(s): sent {summary.sent}, already present
{summary.already_present}, failed {len(summary.failed)}, not sent {summary.not_sent}</p>
<ul>{lines}</ul><p><a href="./">Back to the studies</a></p>""")
