// DICOM Part 10 files (PS3.10 section 7) read with dicom-parser, for the disc viewer.
//
// Transfer syntaxes of the data set (PS3.5 section 10 and Annex A): implicit VR little endian
// (A.1), explicit VR little endian (A.2), explicit VR big endian (A.3, retired but on old
// discs), deflated explicit VR little endian (A.5: the data set after the File Meta Information
// is a raw DEFLATE stream, RFC 1951), and the encapsulated ones (A.4), whose pixel data frames
// are found here and decoded in decode.js.
//
// Deflate needs the browser's asynchronous DecompressionStream: `loadPart10(bytes)` inflates
// first, then parses; `parsePart10(bytes)` is synchronous and takes any other file (or a
// deflated one that loadPart10 has inflated already).

import dicomParser from 'dicom-parser';
import { DICTIONARY } from './dictionary.js';

export const DEFLATED = '1.2.840.10008.1.2.1.99';
export const IMPLICIT_LE = '1.2.840.10008.1.2';
export const EXPLICIT_LE = '1.2.840.10008.1.2.1';
export const EXPLICIT_BE = '1.2.840.10008.1.2.2';

const MAX_VALUE_CHARS = 160;
const MAX_TAG_ROWS = 20000;
const MAX_TRAILING = 16;
const MAX_INFLATED = 1 << 30; // 1 GiB: a hostile deflate stream cannot exhaust memory

/** A file that is not DICOM or is damaged: `.message` is one plain sentence. */
export class DicomError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DicomError';
  }
}

function norm(tag) {
  if (typeof tag === 'number') return 'x' + tag.toString(16).padStart(8, '0');
  const t = String(tag).toLowerCase().replace(/[^0-9a-fx]/g, '');
  return t.startsWith('x') ? t : 'x' + t;
}

let dictMap = null;
/** VR and keyword of a tag ('ggggeeee', lower case) from the PS3.6 data dictionary. */
export function lookupTag(tag) {
  if (dictMap === null) {
    dictMap = new Map();
    for (const line of DICTIONARY.split('\n')) {
      dictMap.set(line.slice(0, 8), { vr: line.slice(8, 10), name: line.slice(11) });
    }
  }
  const t = tag.startsWith('x') ? tag.slice(1) : tag;
  let hit = dictMap.get(t);
  if (hit) return hit;
  const g = parseInt(t.slice(0, 4), 16);
  const e = parseInt(t.slice(4), 16);
  if (e === 0) return { vr: 'UL', name: 'GroupLength' };
  if (g % 2 === 1) {
    if (e >= 0x10 && e <= 0xff) return { vr: 'LO', name: 'PrivateCreator' };
    return { vr: 'UN', name: '' };
  }
  if ((g & 0xff00) === 0x5000 || (g & 0xff00) === 0x6000) {
    hit = dictMap.get(t.slice(0, 2) + 'xx' + t.slice(4));
    if (hit) return hit;
  }
  return { vr: 'UN', name: '' };
}

const STRING_VRS = new Set(['AE', 'AS', 'CS', 'DA', 'DS', 'DT', 'IS', 'LO', 'LT', 'PN', 'SH', 'ST', 'TM', 'UC', 'UI', 'UR', 'UT']);
const NUMBER_VRS = { US: [2, 'uint16'], SS: [2, 'int16'], UL: [4, 'uint32'], SL: [4, 'int32'], FL: [4, 'float'], FD: [8, 'double'] };

function decoderFor(charset) {
  const cs = (charset || '').toUpperCase();
  let label = 'latin1';
  if (cs.includes('ISO_IR 192')) label = 'utf-8';
  else if (cs.includes('ISO_IR 100') || cs === '') label = 'latin1';
  else if (cs.includes('ISO_IR 101')) label = 'iso-8859-2';
  else if (cs.includes('ISO_IR 144')) label = 'iso-8859-5';
  else if (cs.includes('ISO_IR 127')) label = 'iso-8859-6';
  else if (cs.includes('ISO_IR 126')) label = 'iso-8859-7';
  else if (cs.includes('ISO_IR 138')) label = 'iso-8859-8';
  else if (cs.includes('ISO_IR 148')) label = 'iso-8859-9';
  else if (cs.includes('GB18030') || cs.includes('GBK')) label = 'gb18030';
  try {
    return new TextDecoder(label);
  } catch {
    return new TextDecoder('latin1');
  }
}

function vrOf(el) {
  return el.vr || lookupTag(el.tag).vr;
}

function rawString(dataSet, el, decoder) {
  const bytes = dataSet.byteArray.subarray(el.dataOffset, el.dataOffset + el.length);
  return decoder.decode(bytes).replace(/[\0 ]+$/, '').replace(/^ +/, '');
}

function numbersOf(dataSet, el, vr) {
  const [size, fn] = NUMBER_VRS[vr];
  const out = [];
  const n = Math.floor(el.length / size);
  for (let i = 0; i < n; i++) out.push(dataSet[fn](el.tag, i));
  return out;
}

/** Human-readable value of one element for the tag dump (truncated). */
function valueText(dataSet, el, vr, decoder) {
  if (el.items) return `(${el.items.length} item${el.items.length === 1 ? '' : 's'})`;
  if (el.encapsulatedPixelData) return `(encapsulated, ${el.fragments ? el.fragments.length : 0} fragments)`;
  if (el.length === 0) return '';
  if (el.length === 0xffffffff) return '(undefined length)';
  let s;
  if (STRING_VRS.has(vr)) s = rawString(dataSet, el, decoder);
  else if (NUMBER_VRS[vr]) s = numbersOf(dataSet, el, vr).slice(0, 64).join('\\');
  else if (vr === 'AT') {
    const parts = [];
    for (let i = 0; i + 4 <= el.length && i < 256; i += 4) {
      const g = dataSet.uint16(el.tag, i / 2);
      const e = dataSet.uint16(el.tag, i / 2 + 1);
      parts.push(`(${g.toString(16).padStart(4, '0')},${e.toString(16).padStart(4, '0')})`.toUpperCase());
    }
    s = parts.join('\\');
  } else s = `(${el.length} bytes)`;
  return s.length > MAX_VALUE_CHARS ? s.slice(0, MAX_VALUE_CHARS) + '…' : s;
}

function sortedElements(dataSet) {
  return Object.keys(dataSet.elements).sort().map((k) => dataSet.elements[k]);
}

/**
 * A parsed Part 10 file: the contract's DicomFile.
 */
export class DicomFile {
  constructor(dataSet, transferSyntax, bytes) {
    this.dataSet = dataSet;
    this.transferSyntax = transferSyntax;
    this.bytes = bytes;
    this.littleEndian = transferSyntax !== EXPLICIT_BE;
    this.decoder = decoderFor(this._raw('x00080005'));
    this.pixelDataElement =
      dataSet.elements.x7fe00010 || dataSet.elements.x7fe00008 || dataSet.elements.x7fe00009 || null;
    const nf = parseInt(this.string('00280008') || '1', 10);
    this.frames = this.pixelDataElement ? (Number.isFinite(nf) && nf > 0 ? nf : 1) : 0;
  }

  _raw(tag) {
    const el = this.dataSet.elements[tag];
    if (!el || !el.length) return '';
    return rawString(this.dataSet, el, new TextDecoder('latin1'));
  }

  /** Whole string value of a tag (all values, backslash-separated), '' when absent. */
  string(tag, dataSet = this.dataSet) {
    const el = dataSet.elements[norm(tag)];
    if (!el || !el.length || el.items) return '';
    const vr = vrOf(el);
    if (NUMBER_VRS[vr]) return numbersOf(dataSet, el, vr).join('\\');
    return rawString(dataSet, el, this.decoder);
  }

  /** First (or `index`th) numeric value of a tag, undefined when absent. IS/DS are parsed. */
  number(tag, index = 0, dataSet = this.dataSet) {
    const t = norm(tag);
    const el = dataSet.elements[t];
    if (!el || !el.length || el.items) return undefined;
    const vr = vrOf(el);
    if (NUMBER_VRS[vr]) {
      const [size, fn] = NUMBER_VRS[vr];
      if ((index + 1) * size > el.length) return undefined;
      return dataSet[fn](t, index);
    }
    const parts = rawString(dataSet, el, this.decoder).split('\\');
    if (index >= parts.length) return undefined;
    const v = parseFloat(parts[index]);
    return Number.isFinite(v) ? v : undefined;
  }

  /** Items (dicom-parser DataSets) of a sequence, [] when absent. */
  sequence(tag, dataSet = this.dataSet) {
    const el = dataSet.elements[norm(tag)];
    return el && el.items ? el.items.map((i) => i.dataSet).filter(Boolean) : [];
  }

  /** Raw bytes of an element's value (no copy), undefined when absent. */
  bytesOf(tag, dataSet = this.dataSet) {
    const el = dataSet.elements[norm(tag)];
    if (!el || el.length === 0xffffffff) return undefined;
    return dataSet.byteArray.subarray(el.dataOffset, el.dataOffset + el.length);
  }

  /** Full tag dump: [{ tag, vr, name, value, depth }] in tag order, sequences expanded. */
  tags() {
    const rows = [];
    const walk = (ds, depth) => {
      for (const el of sortedElements(ds)) {
        if (rows.length >= MAX_TAG_ROWS) return;
        const tag = el.tag.slice(1);
        const { vr: dvr, name } = lookupTag(tag);
        const vr = el.vr || (el.items ? 'SQ' : dvr);
        rows.push({ tag, vr, name, value: valueText(ds, el, vr, this.decoder), depth });
        if (el.items && depth < 16) {
          el.items.forEach((item, i) => {
            if (rows.length >= MAX_TAG_ROWS) return;
            rows.push({ tag: 'fffee000', vr: '', name: `Item ${i + 1}`, value: '', depth: depth + 1 });
            if (item.dataSet) walk(item.dataSet, depth + 2);
          });
        }
      }
    };
    walk(this.dataSet, 0);
    return rows;
  }

  /** Bytes of frame `index` of encapsulated pixel data (PS3.5 A.4), as one Uint8Array. */
  encapsulatedFrame(index) {
    const el = this.pixelDataElement;
    if (!el || !el.encapsulatedPixelData) throw new DicomError('The pixel data is not encapsulated.');
    if (index < 0 || index >= this.frames) throw new DicomError(`There is no frame ${index + 1}.`);
    const ds = this.dataSet;
    const frags = el.fragments || [];
    if (frags.length === 0) throw new DicomError('The encapsulated pixel data has no fragments.');
    const ranges = this._frameRanges();
    const [first, count] = ranges[index];
    return dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, first, count);
  }

  _frameRanges() {
    if (this._ranges) return this._ranges;
    const el = this.pixelDataElement;
    const frags = el.fragments;
    const n = this.frames;
    const byOffset = (offsets) => {
      const ranges = [];
      for (let f = 0; f < n; f++) {
        const start = offsets[f];
        const end = f + 1 < n ? offsets[f + 1] : Infinity;
        const first = frags.findIndex((fr) => fr.offset === start);
        if (first < 0) throw new DicomError('The offset table of the pixel data does not match its fragments.');
        let count = 0;
        while (first + count < frags.length && frags[first + count].offset < end) count++;
        ranges.push([first, count]);
      }
      return ranges;
    };
    let ranges;
    const ext = this.dataSet.elements.x7fe00001;
    if (ext && ext.length >= n * 8) {
      const b = this.bytesOf('7fe00001');
      const dv = new DataView(b.buffer, b.byteOffset, b.length);
      const offs = [];
      for (let i = 0; i < n; i++) offs.push(Number(dv.getBigUint64(i * 8, this.littleEndian)));
      ranges = byOffset(offs);
    } else if (el.basicOffsetTable && el.basicOffsetTable.length >= n && n > 0) {
      ranges = byOffset(el.basicOffsetTable);
    } else if (n === 1) {
      ranges = [[0, frags.length]];
    } else if (frags.length === n) {
      ranges = frags.map((_, i) => [i, 1]);
    } else {
      // No offset table and more fragments than frames: a frame starts at each fragment that
      // begins with a JPEG SOI (FFD8) or a JPEG 2000 SOC+SIZ (FF4F FF51) marker.
      const starts = [];
      const ba = this.dataSet.byteArray;
      frags.forEach((fr, i) => {
        const p = fr.position;
        if (ba[p] === 0xff && (ba[p + 1] === 0xd8 || (ba[p + 1] === 0x4f && ba[p + 2] === 0xff && ba[p + 3] === 0x51))) starts.push(i);
      });
      if (starts.length !== n) throw new DicomError('The frames of the encapsulated pixel data cannot be told apart.');
      ranges = starts.map((s, i) => [s, (i + 1 < n ? starts[i + 1] : frags.length) - s]);
    }
    this._ranges = ranges;
    return ranges;
  }
}

function message(e) {
  if (typeof e === 'string') return e;
  if (e && e.exception) return message(e.exception);
  return (e && e.message) || String(e);
}

function metaHeader(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new DicomError('Expected the bytes of a file (Uint8Array).');
  if (bytes.length < 132 || bytes[128] !== 0x44 || bytes[129] !== 0x49 || bytes[130] !== 0x43 || bytes[131] !== 0x4d) {
    throw new DicomError('This is not a DICOM file (no DICM prefix).');
  }
  try {
    return dicomParser.readPart10Header(bytes);
  } catch (e) {
    throw new DicomError(`The DICOM file meta information cannot be read (${message(e)}).`);
  }
}

/**
 * Parse a DICOM Part 10 file synchronously.
 *
 * @param {Uint8Array} bytes the whole file; for a deflated file, the output of inflatePart10
 * @returns {DicomFile}
 * @throws {DicomError} not DICOM, damaged, or deflated and not inflated yet
 */
export function parsePart10(bytes) {
  const meta = metaHeader(bytes);
  const ts = meta.string('x00020010') || '';
  let inflated = null;
  if (ts === DEFLATED) {
    inflated = INFLATED.get(bytes);
    if (!inflated) throw new DicomError('This file is deflated: open it with loadPart10 (asynchronous).');
  }
  let dataSet;
  try {
    dataSet = dicomParser.parseDicom(bytes, inflated ? { inflater: () => inflated } : {});
  } catch (e) {
    throw new DicomError(`The DICOM file cannot be read (${message(e)}).`);
  }
  return new DicomFile(dataSet, ts, inflated || bytes);
}

const INFLATED = new WeakMap();

function wrapInflate(e) {
  return e instanceof DicomError ? e : new DicomError('The deflated data set is damaged.');
}

/** Raw DEFLATE (RFC 1951) with the web platform's DecompressionStream, bounded in size. */
async function inflateRaw(data) {
  const reader = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate-raw')).getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > MAX_INFLATED) {
      await reader.cancel().catch(() => {});
      throw new DicomError('The deflated data set is too large.');
    }
    chunks.push(value);
  }
  return chunks;
}

/**
 * For a deflated file (PS3.5 A.5): inflate the data set with DecompressionStream('deflate-raw')
 * and return bytes that parsePart10 accepts. Any other file is returned as it is.
 *
 * @param {Uint8Array} bytes
 * @returns {Promise<Uint8Array>}
 */
export async function inflatePart10(bytes) {
  const meta = metaHeader(bytes);
  if ((meta.string('x00020010') || '') !== DEFLATED) return bytes;
  const pos = meta.position;
  const body = bytes.subarray(pos);
  let chunks;
  let error;
  // Some writers leave bytes after the end of the deflate stream (a pad byte to keep the file
  // even, or a zlib/gzip trailer); Chromium's DecompressionStream rejects any byte after the
  // end. So on failure, try again without the last 1..MAX_TRAILING bytes: cutting too many
  // gives a truncated stream (an error too), so the first success is the real end.
  for (let cut = 0; cut <= MAX_TRAILING && cut < body.length; cut++) {
    try {
      chunks = await inflateRaw(cut ? body.subarray(0, body.length - cut) : body);
      break;
    } catch (e) {
      if (e instanceof DicomError) throw e;
      error = e;
    }
  }
  if (!chunks) throw wrapInflate(error);
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const full = new Uint8Array(pos + total);
  full.set(bytes.subarray(0, pos), 0);
  let off = pos;
  for (const c of chunks) {
    full.set(c, off);
    off += c.length;
  }
  INFLATED.set(bytes, full);
  return bytes;
}

/** Parse any Part 10 file, deflated included: `parsePart10(await inflatePart10(bytes))`. */
export async function loadPart10(bytes) {
  return parsePart10(await inflatePart10(bytes));
}
