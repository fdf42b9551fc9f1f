/**
 * A stored (uncompressed) ZIP writer for "save a decrypted, reconciled copy": APPNOTE.TXT
 * 6.3 (PKWARE) local headers, central directory and end record, CRC-32 (ISO 3309 / ITU-T
 * V.42 polynomial 0xEDB88320), UTF-8 names (general purpose flag bit 11).
 *
 * ZIP64 (APPNOTE 4.3.14-4.3.15, 4.5.3) is written when needed: more than 65,535 entries, or
 * an entry or the central directory starting beyond 4 GiB. One entry must stay below 4 GiB
 * (a DICOM file does); the whole archive is a Blob, so its practical limit is what the
 * browser lets a Blob hold (often a few GiB).
 */

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 of `bytes`. */
export function crc32(bytes, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

const U32 = 0xffffffff;

function dosDateTime(d) {
  const time = (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2);
  const date = (Math.max(d.getFullYear() - 1980, 0) << 9) | ((d.getMonth() + 1) << 5) | d.getDate();
  return { time, date };
}

class Buf {
  constructor(size) {
    this.bytes = new Uint8Array(size);
    this.dv = new DataView(this.bytes.buffer);
    this.p = 0;
  }

  u16(v) { this.dv.setUint16(this.p, v, true); this.p += 2; return this; }

  u32(v) { this.dv.setUint32(this.p, v >>> 0, true); this.p += 4; return this; }

  u64(v) { this.u32(v % 0x100000000); this.u32(Math.floor(v / 0x100000000)); return this; }

  raw(b) { this.bytes.set(b, this.p); this.p += b.length; return this; }
}

export class ZipWriter {
  #parts = [];
  #central = [];
  #offset = 0;
  #names = new Set();

  /** @param {{ date?: Date }} options modification time written for every entry (default now) */
  constructor({ date = new Date() } = {}) {
    this.dos = dosDateTime(date);
  }

  /** Number of entries so far. */
  get size() {
    return this.#central.length;
  }

  /**
   * Add one file.
   * @param {string} name path inside the archive, '/' separated, no leading '/' or '..'
   * @param {Uint8Array} bytes
   */
  add(name, bytes) {
    if (typeof name !== 'string' || !name || name.startsWith('/') || name.split('/').includes('..') || name.includes('\\')) {
      throw new TypeError(`bad name for a ZIP entry: ${JSON.stringify(name)}`);
    }
    if (this.#names.has(name)) throw new TypeError(`duplicate ZIP entry ${name}`);
    if (bytes.length >= U32) throw new RangeError(`${name}: a ZIP entry must be smaller than 4 GiB`);
    this.#names.add(name);
    const nameBytes = new TextEncoder().encode(name);
    const crc = crc32(bytes);
    const offset = this.#offset;
    const h = new Buf(30 + nameBytes.length);
    h.u32(0x04034b50).u16(20).u16(0x0800).u16(0).u16(this.dos.time).u16(this.dos.date)
      .u32(crc).u32(bytes.length).u32(bytes.length).u16(nameBytes.length).u16(0).raw(nameBytes);
    this.#parts.push(h.bytes, bytes);
    this.#offset += h.bytes.length + bytes.length;
    this.#central.push({ nameBytes, crc, size: bytes.length, offset });
  }

  /** The archive. @returns {Promise<Blob>} */
  async blob() {
    const cd = [];
    let cdSize = 0;
    for (const e of this.#central) {
      const far = e.offset >= U32;
      const extra = far ? 12 : 0; // ZIP64 extended information: header, offset
      const c = new Buf(46 + e.nameBytes.length + extra);
      c.u32(0x02014b50).u16(far ? 45 : 20).u16(far ? 45 : 20).u16(0x0800).u16(0)
        .u16(this.dos.time).u16(this.dos.date).u32(e.crc).u32(e.size).u32(e.size)
        .u16(e.nameBytes.length).u16(extra).u16(0).u16(0).u16(0).u32(0)
        .u32(far ? U32 : e.offset).raw(e.nameBytes);
      if (far) c.u16(0x0001).u16(8).u64(e.offset);
      cd.push(c.bytes);
      cdSize += c.bytes.length;
    }
    const cdOffset = this.#offset;
    const n = this.#central.length;
    const zip64 = n > 0xffff || cdOffset >= U32 || cdSize >= U32;
    const tail = [];
    if (zip64) {
      const z = new Buf(56 + 20);
      z.u32(0x06064b50).u64(44).u16(45).u16(45).u32(0).u32(0).u64(n).u64(n).u64(cdSize).u64(cdOffset);
      z.u32(0x07064b50).u32(0).u64(cdOffset + cdSize).u32(1);
      tail.push(z.bytes);
    }
    const end = new Buf(22);
    end.u32(0x06054b50).u16(0).u16(0).u16(zip64 ? 0xffff : n).u16(zip64 ? 0xffff : n)
      .u32(zip64 ? U32 : cdSize).u32(zip64 ? U32 : cdOffset).u16(0);
    tail.push(end.bytes);
    return new Blob([...this.#parts, ...cd, ...tail], { type: 'application/zip' });
  }
}
