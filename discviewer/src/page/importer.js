// Import from the disc (issue 13 item 5): the media's patient identity beside the receiving
// site's; each image decrypted, reconciled (reconcile.js, as `securepacs media import`) and
// (a) saved as a zip of plain Part 10 files, or (b) sent by STOW-RS (stow.js) to the URL typed.
import { reconcilePart10 } from '../reconcile.js';
import { ZipWriter } from '../zip.js';
import { stow } from '../stow.js';
import { date, name, text } from './format.js';
import { explain } from './session.js';

export class Importer {
  constructor(el, disc) {
    this.el = el;
    this.disc = disc;
    this.busy = false;
    el.patient.addEventListener('change', () => this.fillMedia());
    el.close.addEventListener('click', () => { if (!this.busy) el.dialog.close(); });
    el.save.addEventListener('click', () => this.run('zip'));
    el.send.addEventListener('click', () => this.run('stow'));
  }

  open() {
    const { el } = this;
    el.patient.replaceChildren(...this.disc.index.patients.map((p, i) => {
      const o = document.createElement('option');
      o.value = String(i);
      o.textContent = `${name(p.name) || '(no name)'} - ${text(p.id)}`;
      return o;
    }));
    this.fillMedia();
    el.status.textContent = '';
    el.failed.replaceChildren();
    el.progress.hidden = true;
    el.dialog.showModal();
  }

  patient() { return this.disc.index.patients[Number(this.el.patient.value) || 0]; }

  fillMedia() {
    const p = this.patient();
    this.el.mediaId.textContent = text(p.id);
    this.el.mediaIssuer.textContent = text(p.issuer) || '(none)';
    this.el.mediaName.textContent = name(p.name);
    this.el.mediaBirth.textContent = date(p.birthDate);
    this.el.newName.value = text(p.name);
    this.el.newBirth.value = text(p.birthDate);
  }

  target() {
    const { el } = this;
    const t = { patientId: el.newId.value.trim(), issuer: el.newIssuer.value.trim() };
    if (!t.patientId || !t.issuer) throw new Error("Type your site's Patient ID and its issuer first.");
    if (/[\\\u0000-\u001f]/.test(`${t.patientId}${t.issuer}${el.newName.value}`)) {
      throw new Error('No backslash or control characters in the new identity.');
    }
    // Only what differs from the media is changed (as `securepacs media import` does).
    const p = this.patient();
    const newName = el.newName.value.trim();
    const newBirth = el.newBirth.value.trim();
    if (newName && newName !== text(p.name)) t.patientName = newName;
    if (newBirth && newBirth !== text(p.birthDate)) {
      if (!/^\d{8}$/.test(newBirth)) throw new Error('Birth date: 8 digits, YYYYMMDD.');
      t.birthDate = newBirth;
    }
    return t;
  }

  images() {
    const p = this.patient();
    return p.studies.flatMap((s) => s.series.flatMap((se) => se.images));
  }

  /** Reconciled Part 10 files, one at a time; unreadable files go to `skipped`. */
  async *reconciled(target, skipped, tick) {
    const now = new Date();
    const mediaPatientId = text(this.patient().id);
    for (const ref of this.images()) {
      let out;
      try {
        const part10 = await this.disc.part10(ref.fileId);
        // (awaited: the contract returns bytes, dv-crypto's implementation a Promise of them)
        out = { uid: ref.sopInstanceUid, bytes: await reconcilePart10(part10, target, { now, mediaPatientId }) };
      } catch (err) {
        skipped.push({ uid: ref.sopInstanceUid || ref.fileId, reason: explain(err, ref.fileId) });
      }
      tick();
      if (out) yield out;
    }
  }

  async run(kind) {
    if (this.busy) return;
    const { el } = this;
    el.failed.replaceChildren();
    let target;
    try {
      target = this.target();
      if (kind === 'stow') {
        const url = new URL(el.stowUrl.value.trim());
        if (url.protocol !== 'https:') throw new Error('The DICOMweb address must start with https://');
      }
    } catch (err) {
      el.status.textContent = err instanceof TypeError ? 'Type the DICOMweb address of the receiving PACS (https://...).' : err.message;
      return;
    }
    this.busy = true;
    const total = this.images().length;
    let done = 0;
    el.progress.hidden = false;
    el.progress.max = total;
    el.progress.value = 0;
    const tick = () => { done += 1; el.progress.value = done; el.status.textContent = `${kind === 'zip' ? 'Preparing' : 'Sending'} ${done} / ${total}...`; };
    const skipped = [];
    try {
      if (kind === 'zip') {
        const zip = new ZipWriter();
        for await (const { uid, bytes } of this.reconciled(target, skipped, tick)) zip.add(`DICOM/${uid}.dcm`, bytes);
        const blob = await zip.blob();
        const url = URL.createObjectURL(blob);
        const a = document.createElement('a');
        a.href = url;
        a.download = `${target.patientId.replace(/[^A-Za-z0-9._-]/g, '_')}-decrypted.zip`;
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
        el.status.textContent = `Saved ${total - skipped.length} image(s) in a zip (decrypted: keep it safe).`;
      } else {
        const token = el.stowToken.value.trim() || undefined;
        const files = this.reconciled(target, skipped, tick);
        const result = await stow(el.stowUrl.value.trim(), (async function* bytes() { for await (const f of files) yield f.bytes; }()), { token });
        el.status.textContent = `Sent: ${result.sent.length}. Already present: ${result.alreadyPresent.length}. Failed: ${result.failed.length + skipped.length}.`;
        for (const f of result.failed) skipped.push(f);
      }
    } catch (err) {
      el.status.textContent = `${kind === 'zip' ? 'Saving' : 'Sending'} failed: ${err.message || err}`;
    } finally {
      this.busy = false;
    }
    el.failed.replaceChildren(...skipped.map((f) => {
      const li = document.createElement('li');
      li.textContent = `${f.uid}: ${f.reason}`;
      return li;
    }));
  }
}
