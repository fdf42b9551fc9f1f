/**
 * Patient identity reconciliation of one Part 10 file, as `securepacs media import` does it
 * (services/media_import.py and services/coerce.py): the IHE Import Reconciliation Workflow
 * step for media.
 *
 * - Patient ID (0010,0020) and Issuer of Patient ID (0010,0021), and optionally Patient's
 *   Name (0010,0010) and Birth Date (0010,0030), get the receiving site's values.
 * - The previous values go into a new item of Original Attributes Sequence (0400,0561)
 *   (PS3.3 C.12.1.1.9): Modified Attributes Sequence (0400,0550) with the old elements (an
 *   absent one listed empty), Attribute Modification DateTime (0400,0562), Modifying System
 *   (0400,0563), Source of Previous Values (0400,0564), Reason for the Attribute
 *   Modification (0400,0565) = COERCE. Earlier items are kept.
 * - The media's Patient ID (+ issuer) is added to Other Patient IDs Sequence (0010,1002)
 *   (PS3.3 C.7.1.1) with Type of Patient ID TEXT, unless an equal item is there; the old
 *   sequence (its items as they were, without the new one) is recorded in the same Modified
 *   Attributes Sequence item.
 * - UIDs never change. Only top-level elements are spliced, in the file's own transfer
 *   syntax (PS3.5 7.1: implicit/explicit VR little endian, explicit big endian, deflated
 *   via the Compression Streams API); every other element, the pixel data above all, is
 *   copied byte for byte, and the File Meta Information is kept as it is.
 *
 * Differences from the Python side, on purpose: a group length element (gggg,0000) of a
 * changed group is recomputed (pydicom keeps the stale value); when the file already has
 * Other Patient IDs Sequence, its previous value recorded is the old items only (Python on
 * main crashes there, issue 18 item 2).
 */

export class ReconcileError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ReconcileError';
  }
}

const IMPLICIT_LE = '1.2.840.10008.1.2';
const EXPLICIT_BE = '1.2.840.10008.1.2.2';
const DEFLATED = '1.2.840.10008.1.2.1.99';
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);
const MAX_DEPTH = 32;

const T = Object.freeze({
  SpecificCharacterSet: 0x00080005,
  PatientName: 0x00100010,
  PatientID: 0x00100020,
  IssuerOfPatientID: 0x00100021,
  TypeOfPatientID: 0x00100022,
  PatientBirthDate: 0x00100030,
  OtherPatientIDsSequence: 0x00101002,
  ModifiedAttributesSequence: 0x04000550,
  OriginalAttributesSequence: 0x04000561,
  AttributeModificationDateTime: 0x04000562,
  ModifyingSystem: 0x04000563,
  SourceOfPreviousValues: 0x04000564,
  ReasonForTheAttributeModification: 0x04000565,
  Item: 0xfffee000,
  ItemDelimitation: 0xfffee00d,
  SequenceDelimitation: 0xfffee0dd,
});
const VR = {
  [T.SpecificCharacterSet]: 'CS', [T.PatientName]: 'PN', [T.PatientID]: 'LO',
  [T.IssuerOfPatientID]: 'LO', [T.TypeOfPatientID]: 'CS', [T.PatientBirthDate]: 'DA',
  [T.OtherPatientIDsSequence]: 'SQ', [T.ModifiedAttributesSequence]: 'SQ',
  [T.OriginalAttributesSequence]: 'SQ', [T.AttributeModificationDateTime]: 'DT',
  [T.ModifyingSystem]: 'LO', [T.SourceOfPreviousValues]: 'LO',
  [T.ReasonForTheAttributeModification]: 'CS',
};

function bad(message) {
  return new ReconcileError(`cannot reconcile: ${message}`);
}

// ---------------------------------------------------------------- reading

class Reader {
  constructor(bytes, little, explicit) {
    this.b = bytes;
    this.little = little;
    this.explicit = explicit;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  u16(p) {
    if (p + 2 > this.b.length) throw bad('the data set is truncated');
    return this.dv.getUint16(p, this.little);
  }

  u32(p) {
    if (p + 4 > this.b.length) throw bad('the data set is truncated');
    return this.dv.getUint32(p, this.little);
  }

  /** One element at p (within limit): { tag, vr, start, valueStart, valueEnd, end }. */
  element(p, limit, depth, implicit = !this.explicit) {
    if (depth > MAX_DEPTH) throw bad('sequences nest too deeply');
    const tag = ((this.u16(p) << 16) | this.u16(p + 2)) >>> 0;
    let vr = null;
    let len;
    let hdr;
    if (tag >>> 16 === 0xfffe) {
      len = this.u32(p + 4);
      hdr = 8;
    } else if (!implicit) {
      if (p + 6 > limit) throw bad('the data set is truncated');
      vr = String.fromCharCode(this.b[p + 4], this.b[p + 5]);
      if (LONG_VRS.has(vr)) {
        len = this.u32(p + 8);
        hdr = 12;
      } else {
        len = this.u16(p + 6);
        hdr = 8;
      }
    } else {
      len = this.u32(p + 4);
      hdr = 8;
    }
    const valueStart = p + hdr;
    if (len === 0xffffffff && tag === T.Item) {
      // an item of undefined length: elements up to the item delimitation item
      const inner = this.elements(valueStart, limit, depth + 1, implicit);
      if (inner.end === inner.contentEnd) throw bad('an item has no delimiter');
      return { tag, vr, start: p, valueStart, valueEnd: inner.contentEnd, end: inner.end, undefined: true, implicit };
    }
    if (len === 0xffffffff) {
      // undefined length: a sequence, encapsulated pixel data, or UN holding implicit LE
      const innerImplicit = implicit || vr === 'UN';
      const { contentEnd, end } = this.undefinedSequence(valueStart, limit, depth + 1, innerImplicit);
      return { tag, vr, start: p, valueStart, valueEnd: contentEnd, end, undefined: true, implicit };
    }
    const end = valueStart + len;
    if (end > limit) throw bad('an element runs past the end of the data set');
    return { tag, vr, start: p, valueStart, valueEnd: end, end, undefined: false, implicit };
  }

  /** Items up to the sequence delimitation item. */
  undefinedSequence(p, limit, depth, implicit) {
    for (;;) {
      const item = this.element(p, limit, depth, implicit);
      if (item.tag === T.SequenceDelimitation) return { contentEnd: p, end: item.end };
      if (item.tag !== T.Item) throw bad('a sequence holds something other than items');
      p = item.end;
    }
  }

  /** Elements of [p, limit) in order; an undefined-length item stops at its delimiter. */
  elements(p, limit, depth, implicit = !this.explicit) {
    const out = [];
    while (p < limit) {
      const el = this.element(p, limit, depth, implicit);
      if (el.tag === T.ItemDelimitation) return { list: out, contentEnd: p, end: el.end };
      out.push(el);
      p = el.end;
    }
    return { list: out, contentEnd: limit, end: limit };
  }

  /** The items of a sequence element: [{ start, end, contentStart, contentEnd }]. */
  items(seq, depth) {
    const out = [];
    let p = seq.valueStart;
    while (p < seq.valueEnd) {
      const it = this.element(p, seq.valueEnd, depth + 1, seq.implicit);
      if (it.tag !== T.Item) throw bad('a sequence holds something other than items');
      out.push({ start: it.start, end: it.end, contentStart: it.valueStart, contentEnd: it.valueEnd });
      p = it.end;
    }
    return out;
  }
}

function text(bytes, charset) {
  const dec = /192/.test(charset) ? new TextDecoder('utf-8') : new TextDecoder('latin1');
  return dec.decode(bytes).replace(/[ \0]+$/, '');
}

// ---------------------------------------------------------------- writing

class Writer {
  constructor(little, explicit) {
    this.little = little;
    this.explicit = explicit;
  }

  header(tag, vr, length) {
    const long = this.explicit && LONG_VRS.has(vr);
    const h = new Uint8Array(!this.explicit || long ? (this.explicit ? 12 : 8) : 8);
    const dv = new DataView(h.buffer);
    dv.setUint16(0, tag >>> 16, this.little);
    dv.setUint16(2, tag & 0xffff, this.little);
    if (!this.explicit) {
      dv.setUint32(4, length, this.little);
    } else {
      h[4] = vr.charCodeAt(0);
      h[5] = vr.charCodeAt(1);
      if (long) dv.setUint32(8, length, this.little);
      else {
        if (length > 0xffff) throw bad(`a value of ${vr} is too long`);
        dv.setUint16(6, length, this.little);
      }
    }
    return h;
  }

  element(tag, value) {
    const vr = VR[tag];
    return concat([this.header(tag, vr, value.length), value]);
  }

  item(parts) {
    const body = concat(parts);
    const h = new Uint8Array(8);
    const dv = new DataView(h.buffer);
    dv.setUint16(0, 0xfffe, this.little);
    dv.setUint16(2, 0xe000, this.little);
    dv.setUint32(4, body.length, this.little);
    return concat([h, body]);
  }
}

function concat(parts) {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function encodeText(value, charset) {
  let bytes;
  if (/^[\x20-\x7e]*$/.test(value)) {
    bytes = new TextEncoder().encode(value);
  } else if (/192/.test(charset)) {
    bytes = new TextEncoder().encode(value);
  } else if (/ISO_IR 100/.test(charset) && /^[\x20-\xff]*$/.test(value)) {
    bytes = Uint8Array.from(value, (c) => c.charCodeAt(0));
  } else {
    throw bad(`the value ${JSON.stringify(value)} cannot be written in the file's character set ${charset || '(default)'}`);
  }
  if (bytes.length % 2) bytes = concat([bytes, new Uint8Array([0x20])]);
  return bytes;
}

function dateTime(now) {
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${now.getUTCFullYear()}${p(now.getUTCMonth() + 1)}${p(now.getUTCDate())}${p(now.getUTCHours())}`
    + `${p(now.getUTCMinutes())}${p(now.getUTCSeconds())}.${p(now.getUTCMilliseconds(), 3)}000+0000`;
}

async function pipe(bytes, stream) {
  const out = new Response(new Blob([bytes]).stream().pipeThrough(stream));
  return new Uint8Array(await out.arrayBuffer());
}

function checkTarget(target) {
  const t = { patientId: '', issuer: '', patientName: '', birthDate: '', ...target };
  if (t.issuer && !t.patientId) throw new ReconcileError('an issuer needs a new Patient ID (the ID it qualifies)');
  for (const [name, value, limit] of [['Patient ID', t.patientId, 64], ['issuer', t.issuer, 64],
    ['patient name', t.patientName, 324]]) {
    if (typeof value !== 'string' || value.length > limit || value.includes('\\') || /[\x00-\x1f]/.test(value)) {
      throw new ReconcileError(`the ${name} must be at most ${limit} characters, without backslash or control characters`);
    }
  }
  if (t.birthDate && !/^\d{8}$/.test(t.birthDate)) throw new ReconcileError('the birth date must be YYYYMMDD');
  return t;
}

/**
 * Reconcile one Part 10 file for the receiving site.
 *
 * @param {Uint8Array} part10 the decrypted file
 * @param {{ patientId: string, issuer?: string, patientName?: string, birthDate?: string }} target
 *   empty fields are left as on the media
 * @param {{ now: Date, mediaPatientId?: string, source?: string, modifyingSystem?: string }} options
 *   `source`: Source of Previous Values (Python: "media <disc name>"); `modifyingSystem`
 *   (Python: "securepacs <version>"); `mediaPatientId`: refuse a file of another patient
 * @returns {Promise<Uint8Array>} the reconciled Part 10 file (the input when nothing changes)
 * @throws {ReconcileError}
 */
export async function reconcilePart10(part10, target, { now, mediaPatientId, source = '', modifyingSystem = 'securepacs disc viewer' } = {}) {
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw new TypeError('reconcilePart10 needs options.now (a Date)');
  const t = checkTarget(target);
  if (!(part10 instanceof Uint8Array) || part10.length < 144 || String.fromCharCode(...part10.subarray(128, 132)) !== 'DICM') {
    throw bad('not a DICOM Part 10 file');
  }
  // File Meta Information: explicit VR little endian, group 0002 (PS3.10 7.1)
  const meta = new Reader(part10, true, true);
  let p = 132;
  let syntax = '';
  while (p + 8 <= part10.length && meta.u16(p) === 0x0002) {
    const el = meta.element(p, part10.length, 0);
    if (el.tag === 0x00020010) syntax = text(part10.subarray(el.valueStart, el.valueEnd), '');
    p = el.end;
  }
  const metaEnd = p;
  if (!syntax) throw bad('the file meta has no transfer syntax');
  const little = syntax !== EXPLICIT_BE;
  const explicit = syntax !== IMPLICIT_LE;
  const deflated = syntax === DEFLATED;
  let body = part10.subarray(metaEnd);
  if (deflated) {
    try {
      body = await pipe(body, new DecompressionStream('deflate-raw'));
    } catch {
      throw bad('the deflated data set does not inflate');
    }
  }
  const r = new Reader(body, little, explicit);
  const top = r.elements(0, body.length, 0).list;
  const byTag = new Map(top.map((e) => [e.tag, e]));
  const value = (e) => body.subarray(e.valueStart, e.valueEnd);
  const charsetEl = byTag.get(T.SpecificCharacterSet);
  const charset = charsetEl ? text(value(charsetEl), '') : '';
  const str = (tag, map = byTag) => (map.get(tag) ? text(value(map.get(tag)), charset) : null);
  const oldId = str(T.PatientID) || '';
  const oldIssuer = str(T.IssuerOfPatientID) || '';
  if (mediaPatientId !== undefined && mediaPatientId !== null && mediaPatientId !== oldId) {
    throw new ReconcileError(`this file belongs to Patient ID ${oldId}, not ${mediaPatientId}`);
  }
  // the assignments, as Reconciliation.coercion() lists them
  const assignments = [];
  if (t.patientId) assignments.push([T.PatientID, t.patientId], [T.IssuerOfPatientID, t.issuer]);
  if (t.patientName) assignments.push([T.PatientName, t.patientName]);
  if (t.birthDate) assignments.push([T.PatientBirthDate, t.birthDate]);
  const w = new Writer(little, explicit);
  const needsUtf8 = assignments.some(([, v]) => !/^[\x00-\x7f]*$/.test(v));
  const newCharset = needsUtf8 && !charsetEl ? 'ISO_IR 192' : charset;
  const replaced = new Map(); // tag -> new element bytes (or null to keep)
  const previous = new Map(); // tag -> old element bytes (raw) or an empty element
  const changed = [];
  for (const [tag, newValue] of assignments) {
    const old = byTag.get(tag);
    // coerce.apply: unchanged only if the old value equals the new (an empty new value is
    // None in Python, which no present element equals)
    if (old && newValue !== '' && str(tag) === newValue) continue;
    previous.set(tag, old ? body.subarray(old.start, old.end) : w.element(tag, new Uint8Array(0)));
    replaced.set(tag, w.element(tag, newValue ? encodeText(newValue, newCharset) : new Uint8Array(0)));
    changed.push(tag);
  }
  if (changed.length === 0) return part10;
  if (needsUtf8 && !charsetEl) {
    replaced.set(T.SpecificCharacterSet, w.element(T.SpecificCharacterSet, encodeText('ISO_IR 192', '')));
  }
  // Other Patient IDs Sequence (media_import.reconcile)
  if (changed.includes(T.PatientID) && oldId) {
    const othersEl = byTag.get(T.OtherPatientIDsSequence);
    const items = othersEl ? r.items(othersEl, 0) : [];
    const exists = items.some((it) => {
      const inner = new Map(r.elements(it.contentStart, it.contentEnd, 1, othersEl.implicit).list.map((e) => [e.tag, e]));
      return (str(T.PatientID, inner) || '') === oldId && (str(T.IssuerOfPatientID, inner) || '') === oldIssuer;
    });
    if (!exists) {
      const oldIdEl = byTag.get(T.PatientID);
      const parts = [body.subarray(oldIdEl.start, oldIdEl.end)];
      if (oldIssuer) {
        const e = byTag.get(T.IssuerOfPatientID);
        parts.push(body.subarray(e.start, e.end));
      }
      parts.push(w.element(T.TypeOfPatientID, encodeText('TEXT', '')));
      const newItem = w.item(parts);
      const seqBody = concat([...items.map((it) => body.subarray(it.start, it.end)), newItem]);
      replaced.set(T.OtherPatientIDsSequence, concat([w.header(T.OtherPatientIDsSequence, 'SQ', seqBody.length), seqBody]));
      previous.set(T.OtherPatientIDsSequence, othersEl ? body.subarray(othersEl.start, othersEl.end)
        : w.element(T.OtherPatientIDsSequence, new Uint8Array(0)));
    }
  }
  // the new Original Attributes Sequence item (coerce.apply)
  const prevItem = w.item([...previous.keys()].sort((a, b) => a - b).map((k) => previous.get(k)));
  const modified = concat([w.header(T.ModifiedAttributesSequence, 'SQ', prevItem.length), prevItem]);
  const record = w.item([
    modified,
    w.element(T.AttributeModificationDateTime, encodeText(dateTime(now), '')),
    w.element(T.ModifyingSystem, encodeText(modifyingSystem.slice(0, 64), '')),
    w.element(T.SourceOfPreviousValues, encodeText(source.slice(0, 64), newCharset)),
    w.element(T.ReasonForTheAttributeModification, encodeText('COERCE', '')),
  ]);
  const oasEl = byTag.get(T.OriginalAttributesSequence);
  const oldItems = oasEl ? r.items(oasEl, 0).map((it) => body.subarray(it.start, it.end)) : [];
  const oasBody = concat([...oldItems, record]);
  replaced.set(T.OriginalAttributesSequence, concat([w.header(T.OriginalAttributesSequence, 'SQ', oasBody.length), oasBody]));
  // splice: original elements in order, replaced/inserted ones at their tag's place
  const out = [];
  const pending = [...replaced.keys()].filter((k) => !byTag.has(k)).sort((a, b) => a - b);
  const groupLengths = [];
  for (const e of top) {
    while (pending.length && pending[0] < e.tag) out.push({ tag: pending[0], bytes: replaced.get(pending.shift()) });
    const bytes = replaced.has(e.tag) ? replaced.get(e.tag) : body.subarray(e.start, e.end);
    out.push({ tag: e.tag, bytes });
    if ((e.tag & 0xffff) === 0 && e.valueEnd - e.valueStart === 4) groupLengths.push(out.length - 1);
  }
  while (pending.length) out.push({ tag: pending[0], bytes: replaced.get(pending.shift()) });
  // group length elements (retired, PS3.5 7.2) of changed groups: recompute
  for (const index of groupLengths) {
    const group = out[index].tag >>> 16;
    if (![...replaced.keys()].some((k) => k >>> 16 === group)) continue;
    const size = out.filter((o) => o.tag >>> 16 === group && (o.tag & 0xffff) !== 0).reduce((s, o) => s + o.bytes.length, 0);
    const el = out[index].bytes.slice();
    new DataView(el.buffer).setUint32(el.length - 4, size, little);
    out[index].bytes = el;
  }
  let newBody = concat(out.map((o) => o.bytes));
  if (deflated) newBody = await pipe(newBody, new CompressionStream('deflate-raw'));
  return concat([part10.subarray(0, metaEnd), newBody]);
}

/**
 * SOP Instance UID (0008,0018) of a Part 10 file, read from its data set (what a server
 * stores and answers with; the File Meta's copy may disagree). Deflated files, and files
 * whose data set cannot be walked, answer the File Meta's Media Storage SOP Instance UID.
 * @param {Uint8Array} part10
 * @returns {string} '' when neither is readable
 */
export function sopInstanceUid(part10) {
  try {
    if (part10.length < 144 || String.fromCharCode(...part10.subarray(128, 132)) !== 'DICM') return '';
    const meta = new Reader(part10, true, true);
    let p = 132;
    let syntax = '';
    let metaUid = '';
    while (p + 8 <= part10.length && meta.u16(p) === 0x0002) {
      const el = meta.element(p, part10.length, 0);
      if (el.tag === 0x00020010) syntax = text(part10.subarray(el.valueStart, el.valueEnd), '');
      if (el.tag === 0x00020003) metaUid = text(part10.subarray(el.valueStart, el.valueEnd), '');
      p = el.end;
    }
    if (syntax === DEFLATED) return metaUid;
    const r = new Reader(part10.subarray(p), syntax !== EXPLICIT_BE, syntax !== IMPLICIT_LE);
    let q = 0;
    while (q < r.b.length) {
      const el = r.element(q, r.b.length, 0);
      if (el.tag === 0x00080018) return text(r.b.subarray(el.valueStart, el.valueEnd), '');
      if (el.tag > 0x00080018) break;
      q = el.end;
    }
    return metaUid;
  } catch (err) {
    if (err instanceof ReconcileError) return '';
    throw err;
  }
}
