/**
 * A small, strict reader of ASN.1 BER/DER (ITU-T X.690 8), enough for CMS (RFC 5652),
 * PKCS #8 (RFC 5208/5958), PKCS #12 (RFC 7292) and X.509 identifiers.
 *
 * - Definite and indefinite lengths (X.690 8.1.3.6: end-of-contents 00 00), as
 *   `openssl cms -stream` writes them; constructed OCTET STRINGs (X.690 8.7.3) are joined.
 * - Nothing is copied while walking: an element is a view (offsets) into the input.
 * - Hostile input: every length is checked against the enclosing element, nesting is limited,
 *   and the only allocation ({@link octets} of a constructed string) is bounded by the input
 *   size. Any violation throws `Asn1Error` with code 'truncated' (the data stops before an
 *   element ends) or 'malformed'.
 *
 * Pure ES module, no Node-only API: runs unchanged in browsers.
 */

export const MAX_DEPTH = 48;
export const MAX_CHILDREN = 4096;

/** Error raised for BER that cannot be read; `code` is 'truncated' or 'malformed'. */
export class Asn1Error extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'Asn1Error';
    this.code = code;
  }
}

export const UNIVERSAL = 0;
export const APPLICATION = 1;
export const CONTEXT = 2;
export const PRIVATE = 3;

export const TAG = Object.freeze({
  BOOLEAN: 1, INTEGER: 2, BIT_STRING: 3, OCTET_STRING: 4, NULL: 5, OID: 6,
  UTF8String: 12, SEQUENCE: 16, SET: 17, PrintableString: 19, IA5String: 22, BMPString: 30,
});

/**
 * One element: `cls` (0 universal .. 3 private), `constructed`, `tag` (number),
 * `start` (first identifier octet), `contentStart`, `contentEnd` (exclusive, before the
 * end-of-contents octets of an indefinite element), `end` (exclusive), `indefinite`, `depth`,
 * and `bytes` (the whole input).
 */
export class Element {
  constructor(bytes, cls, constructed, tag, start, contentStart, contentEnd, end, indefinite, depth) {
    this.bytes = bytes;
    this.cls = cls;
    this.constructed = constructed;
    this.tag = tag;
    this.start = start;
    this.contentStart = contentStart;
    this.contentEnd = contentEnd;
    this.end = end;
    this.indefinite = indefinite;
    this.depth = depth;
  }

  /** True when this is [cls tag] (universal by default). */
  is(tag, cls = UNIVERSAL) {
    return this.tag === tag && this.cls === cls;
  }

  /** The content octets (a view, no copy) of a primitive element. */
  get content() {
    return this.bytes.subarray(this.contentStart, this.contentEnd);
  }

  /** The whole encoding (identifier, length, content), a view. */
  get der() {
    return this.bytes.subarray(this.start, this.end);
  }

  /**
   * The elements inside a constructed element (at most `max`: structures read here are
   * small; a hostile file with millions of tiny elements is refused, not listed).
   */
  children(max = MAX_CHILDREN) {
    const out = [];
    this.forEach((child) => {
      if (out.length >= max) fail('malformed', 'an ASN.1 structure has too many elements');
      out.push(child);
    });
    return out;
  }

  /** Call `fn(child)` for each element inside a constructed element, without a list. */
  forEach(fn) {
    if (!this.constructed) fail('malformed', 'a primitive ASN.1 element has no children');
    let pos = this.contentStart;
    while (pos < this.contentEnd) {
      const child = readElement(this.bytes, pos, this.contentEnd, this.depth + 1);
      fn(child);
      pos = child.end;
    }
  }
}

function fail(code, message) {
  throw new Asn1Error(code, message);
}

/**
 * Read one element at `pos`, which must end by `limit`.
 *
 * @param {Uint8Array} bytes
 * @param {number} pos
 * @param {number} limit exclusive end of the enclosing content
 * @param {number} depth nesting level (limited by MAX_DEPTH)
 * @returns {Element}
 */
export function readElement(bytes, pos, limit = bytes.length, depth = 0) {
  if (depth > MAX_DEPTH) fail('malformed', 'ASN.1 nesting is too deep');
  const start = pos;
  if (pos >= limit) fail('truncated', 'ASN.1 element expected but the data ends');
  const first = bytes[pos++];
  const cls = first >> 6;
  const constructed = (first & 0x20) !== 0;
  let tag = first & 0x1f;
  if (tag === 0x1f) {
    tag = 0;
    for (let n = 0; ; n++) {
      if (pos >= limit) fail('truncated', 'ASN.1 tag number runs past the end');
      if (n >= 4) fail('malformed', 'ASN.1 tag number is too large');
      const b = bytes[pos++];
      tag = tag * 128 + (b & 0x7f);
      if (!(b & 0x80)) break;
    }
  }
  if (pos >= limit) fail('truncated', 'ASN.1 length expected but the data ends');
  const lb = bytes[pos++];
  let length = -1;
  if (lb < 0x80) {
    length = lb;
  } else if (lb === 0x80) {
    if (!constructed) fail('malformed', 'indefinite length on a primitive ASN.1 element');
  } else {
    const n = lb & 0x7f;
    if (n > 6 || lb === 0xff) fail('malformed', 'ASN.1 length is too large');
    length = 0;
    for (let i = 0; i < n; i++) {
      if (pos >= limit) fail('truncated', 'ASN.1 length runs past the end');
      length = length * 256 + bytes[pos++];
    }
  }
  const contentStart = pos;
  if (length >= 0) {
    const end = contentStart + length;
    if (end > limit) {
      // past the enclosing element: truncation if it is past the input, else a lie
      fail(end > bytes.length ? 'truncated' : 'malformed',
        end > bytes.length ? 'the file ends before its ASN.1 structure does'
          : 'an ASN.1 element is longer than the element holding it');
    }
    return new Element(bytes, cls, constructed, tag, start, contentStart, end, end, false, depth);
  }
  // indefinite: children up to end-of-contents (00 00)
  let p = contentStart;
  for (;;) {
    if (p + 2 > limit) {
      fail(limit === bytes.length ? 'truncated' : 'malformed',
        'an indefinite-length ASN.1 element has no end-of-contents');
    }
    if (bytes[p] === 0 && bytes[p + 1] === 0) break;
    const child = readElement(bytes, p, limit, depth + 1);
    p = child.end;
  }
  return new Element(bytes, cls, constructed, tag, start, contentStart, p, p + 2, true, depth);
}

/**
 * Read the one element that fills `bytes` (trailing bytes are refused).
 * @param {Uint8Array} bytes
 * @returns {Element}
 */
export function parse(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('ASN.1 input must be a Uint8Array');
  const el = readElement(bytes, 0, bytes.length, 0);
  if (el.end !== bytes.length) {
    // OpenSSL never writes trailing data; a zero-padded tail (as on some media) is tolerated
    for (let i = el.end; i < bytes.length; i++) {
      if (bytes[i] !== 0) fail('malformed', 'data after the end of the ASN.1 structure');
    }
  }
  return el;
}

/** The children of a constructed element of the expected tag, with a one-line error. */
export function expectConstructed(el, tag, cls = UNIVERSAL, what = 'structure') {
  if (!el || !el.is(tag, cls) || !el.constructed) fail('malformed', `${what}: unexpected ASN.1 element`);
  return el.children();
}

/**
 * The octets of an OCTET STRING (or any string type / implicitly tagged string), joining
 * the segments of a constructed encoding. A primitive string is returned as a view.
 * @param {Element} el
 * @returns {Uint8Array}
 */
export function octets(el) {
  if (!el.constructed) return el.content;
  // two passes (size, then copy) so that no list of segments is ever built
  const walk = (e, fn) => e.forEach((c) => {
    if (c.constructed) {
      walk(c, fn);
    } else {
      if (!c.is(TAG.OCTET_STRING)) fail('malformed', 'a constructed OCTET STRING holds something else');
      fn(c);
    }
  });
  let total = 0;
  walk(el, (c) => { total += c.contentEnd - c.contentStart; });
  const out = new Uint8Array(total); // total <= input size: segments do not overlap
  let at = 0;
  walk(el, (c) => {
    out.set(c.content, at);
    at += c.contentEnd - c.contentStart;
  });
  return out;
}

/** Dotted string of an OBJECT IDENTIFIER (X.690 8.19). */
export function oid(el) {
  if (!el || !el.is(TAG.OID) || el.constructed) fail('malformed', 'OBJECT IDENTIFIER expected');
  const b = el.content;
  if (b.length === 0 || b.length > 64) fail('malformed', 'OBJECT IDENTIFIER of a bad length');
  const arcs = [];
  let value = 0;
  let started = false;
  for (let i = 0; i < b.length; i++) {
    if (!started && b[i] === 0x80) fail('malformed', 'OBJECT IDENTIFIER arc with a leading zero');
    started = true;
    value = value * 128 + (b[i] & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 256) fail('malformed', 'OBJECT IDENTIFIER arc is too large');
    if (!(b[i] & 0x80)) {
      if (arcs.length === 0) {
        const x = value < 80 ? Math.floor(value / 40) : 2;
        arcs.push(x, value - 40 * x);
      } else {
        arcs.push(value);
      }
      value = 0;
      started = false;
    }
  }
  if (started) fail('malformed', 'OBJECT IDENTIFIER ends inside an arc');
  return arcs.join('.');
}

/**
 * A small non-negative INTEGER as a number (iteration counts, versions, key lengths).
 * Values above 2^53 - 1 raise 'malformed'.
 */
export function smallInt(el) {
  if (!el || !el.is(TAG.INTEGER) || el.constructed) fail('malformed', 'INTEGER expected');
  const b = el.content;
  if (b.length === 0) fail('malformed', 'empty INTEGER');
  if (b[0] & 0x80) fail('malformed', 'negative INTEGER where a count is expected');
  let v = 0;
  for (let i = 0; i < b.length; i++) {
    v = v * 256 + b[i];
    if (v > Number.MAX_SAFE_INTEGER) fail('malformed', 'INTEGER is too large');
  }
  return v;
}

/** The unsigned big-endian magnitude of an INTEGER (leading zero octets dropped). */
export function intBytes(el) {
  if (!el || !el.is(TAG.INTEGER) || el.constructed) fail('malformed', 'INTEGER expected');
  let b = el.content;
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  return b.subarray(i);
}

/** Hex of a byte array (lower case). */
export function hex(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += bytes[i].toString(16).padStart(2, '0');
  return s;
}

/** Equality of two byte arrays. */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------- a tiny DER writer

function derLength(n) {
  if (n < 0x80) return [n];
  const out = [];
  while (n > 0) {
    out.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return [0x80 | out.length, ...out];
}

/** One DER TLV: identifier octet `id` around the concatenation of `parts`. */
export function der(id, ...parts) {
  const size = parts.reduce((s, p) => s + p.length, 0);
  const head = [id, ...derLength(size)];
  const out = new Uint8Array(head.length + size);
  out.set(head, 0);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** DER of a dotted OBJECT IDENTIFIER. */
export function derOid(dotted) {
  const arcs = dotted.split('.').map(Number);
  const body = [];
  const push = (v) => {
    const tmp = [v & 0x7f];
    v = Math.floor(v / 128);
    while (v > 0) {
      tmp.unshift(0x80 | (v & 0x7f));
      v = Math.floor(v / 128);
    }
    body.push(...tmp);
  };
  push(arcs[0] * 40 + arcs[1]);
  for (const a of arcs.slice(2)) push(a);
  return der(0x06, new Uint8Array(body));
}
