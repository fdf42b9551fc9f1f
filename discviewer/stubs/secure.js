// STUB of src/secure.js (contract), for dv-page development only; deleted before merge.
// Minimal: DER EnvelopedData with password recipients (PBKDF2 + RFC 3211 PWRI-KEK, AES),
// AES-CBC content, DigestedData (SHA-256/SHA-1) or id-data inside.
export class MediaError extends Error { constructor(code, message) { super(message); this.code = code; } }
export class PasswordKey { constructor(password) { this.password = password; } }
export class PrivateKey { static async fromFile() { throw new MediaError('malformed', 'stub: key files are not supported by the stub'); } }
export class KeyCache { constructor() { this.derivations = 0; this.keys = new Map(); } }

const subtle = globalThis.crypto.subtle;
function tlv(b, off, end = b.length) {
  if (off + 2 > end) throw new MediaError('truncated', 'truncated');
  const tag = b[off]; let len = b[off + 1]; let p = off + 2;
  if (len & 0x80) { const n = len & 0x7f; if (n === 0 || n > 4) throw new MediaError('malformed', 'BER'); len = 0; for (let i = 0; i < n; i++) len = len * 256 + b[p++]; }
  if (p + len > end) throw new MediaError('truncated', 'truncated');
  return { tag, start: p, end: p + len, next: p + len };
}
function children(b, node) { const out = []; let p = node.start; while (p < node.end) { const c = tlv(b, p, node.end); out.push(c); p = c.next; } return out; }
function oid(b, n) { const v = b.subarray(n.start, n.end); const parts = [Math.floor(v[0] / 40), v[0] % 40]; let x = 0; for (let i = 1; i < v.length; i++) { x = x * 128 + (v[i] & 0x7f); if (!(v[i] & 0x80)) { parts.push(x); x = 0; } } return parts.join('.'); }
function int(b, n) { let x = 0; for (let i = n.start; i < n.end; i++) x = x * 256 + b[i]; return x; }
const AES = { '2.16.840.1.101.3.4.1.2': 16, '2.16.840.1.101.3.4.1.22': 24, '2.16.840.1.101.3.4.1.42': 32 };
const PRF = { '1.2.840.113549.2.7': 'SHA-1', '1.2.840.113549.2.9': 'SHA-256', '1.2.840.113549.2.11': 'SHA-512' };

function envelope(b) {
  const ci = tlv(b, 0); const [type, wrapped] = children(b, ci);
  if (oid(b, type) !== '1.2.840.113549.1.7.3') throw new MediaError('malformed', 'not EnvelopedData');
  const env = children(b, children(b, wrapped)[0]);
  let i = 1; if (env[i].tag === 0xa0) i++;
  const recipients = children(b, env[i]).map((r) => {
    if (r.tag === 0xa3) {
      const f = children(b, r); const kdf = children(b, f[1]); const params = children(b, kdf[1]);
      const salt = b.subarray(params[0].start, params[0].end); const iterations = int(b, params[1]);
      let prf = 'SHA-1'; for (const p of params.slice(2)) if (p.tag === 0x30) prf = PRF[oid(b, children(b, p)[0])];
      const kea = children(b, f[2]); const inner = children(b, kea[1]);
      return { kind: 'password', salt, iterations, prf, kekLength: AES[oid(b, inner[0])], iv: b.subarray(inner[1].start, inner[1].end), encryptedKey: b.subarray(f[3].start, f[3].end) };
    }
    if (r.tag === 0x30) { const f = children(b, r); const alg = oid(b, children(b, f[2])[0]); return { kind: alg === '1.2.840.113549.1.1.7' ? 'rsa-oaep' : alg === '1.2.840.113549.1.1.1' ? 'rsa-pkcs1' : 'other' }; }
    return { kind: 'other' };
  });
  const eci = children(b, env[i + 1]); const alg = children(b, eci[1]);
  const keyLength = AES[oid(b, alg[0])];
  if (!keyLength) throw new MediaError('unsupported-algorithm', 'stub: only AES content');
  return { recipients, keyLength, iv: b.subarray(alg[1].start, alg[1].end), content: b.subarray(eci[2].start, eci[2].end) };
}
export function describe(bytes) { const e = envelope(bytes); return { recipients: e.recipients.map((r) => ({ kind: r.kind })), content: { algorithm: `aes-${e.keyLength * 8}-cbc` } }; }

async function rawDecrypt(key, iv, ct) {
  const pad = new Uint8Array(await subtle.encrypt({ name: 'AES-CBC', iv: ct.slice(ct.length - 16) }, key, new Uint8Array(0)));
  const all = new Uint8Array(ct.length + 16); all.set(ct); all.set(pad.subarray(0, 16), ct.length);
  return new Uint8Array(await subtle.decrypt({ name: 'AES-CBC', iv }, key, all));
}
async function unwrap(kek, iv, c) {
  const n = c.length / 16; if (n < 2 || c.length % 16) return null;
  const last = await rawDecrypt(kek, c.slice((n - 2) * 16, (n - 1) * 16), c.slice((n - 1) * 16));
  const head = await rawDecrypt(kek, last, c.slice(0, (n - 1) * 16));
  const outer = new Uint8Array(c.length); outer.set(head); outer.set(last, head.length);
  const inner = await rawDecrypt(kek, iv, outer);
  const len = inner[0];
  if (((inner[1] ^ inner[4]) & (inner[2] ^ inner[5]) & (inner[3] ^ inner[6])) !== 0xff || len + 4 > inner.length) return null;
  return inner.slice(4, 4 + len);
}
export async function openSecureFile(bytes, keys, cache, { requireDigest = false } = {}) {
  const e = envelope(bytes);
  let cek = null;
  for (const r of e.recipients.filter((x) => x.kind === 'password')) {
    for (const k of keys.filter((x) => x instanceof PasswordKey)) {
      const id = `${k.password}|${[...r.salt]}|${r.iterations}|${r.prf}|${r.kekLength}`;
      let kek = cache.keys.get(id);
      if (!kek) {
        const base = await subtle.importKey('raw', new TextEncoder().encode(k.password), 'PBKDF2', false, ['deriveKey']);
        kek = await subtle.deriveKey({ name: 'PBKDF2', salt: r.salt, iterations: r.iterations, hash: r.prf }, base, { name: 'AES-CBC', length: r.kekLength * 8 }, false, ['encrypt', 'decrypt']);
        cache.keys.set(id, kek); cache.derivations += 1;
      }
      cek = await unwrap(kek, r.iv, r.encryptedKey);
      if (cek) break;
    }
    if (cek) break;
  }
  if (!cek) {
    if (!e.recipients.some((x) => x.kind === 'password' || x.kind === 'rsa-oaep')) throw new MediaError('unsupported-recipient', 'unsupported recipient');
    throw new MediaError('wrong-key', 'The password does not open this file.');
  }
  const key = await subtle.importKey('raw', cek, 'AES-CBC', false, ['decrypt']);
  let plain;
  try { plain = new Uint8Array(await subtle.decrypt({ name: 'AES-CBC', iv: e.iv }, key, e.content)); } catch { throw new MediaError('tampered', 'tampered'); }
  if (plain.length > 132 && plain[128] === 0x44 && plain[129] === 0x49) {
    if (requireDigest) throw new MediaError('unprotected', 'unprotected');
    return { part10: plain, integrity: 'unprotected' };
  }
  try {
    const dd = children(plain, tlv(plain, 0));
    const alg = oid(plain, children(plain, dd[1])[0]);
    const eci = children(plain, dd[2]); const octet = children(plain, eci[1])[0];
    const content = plain.slice(octet.start, octet.end);
    const want = plain.subarray(dd[3].start, dd[3].end);
    const got = new Uint8Array(await subtle.digest(alg === '1.3.14.3.2.26' ? 'SHA-1' : 'SHA-256', content));
    if (got.length !== want.length || got.some((v, i) => v !== want[i])) throw new Error('digest');
    return { part10: content, integrity: 'verified' };
  } catch { throw new MediaError('tampered', 'tampered'); }
}
