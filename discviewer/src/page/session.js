// One opened disc: its keys (one PBKDF2 per disc through the KeyCache), its DICOMDIR, and a
// small in-memory cache of opened files. Decrypted bytes live in memory only.
import { KeyCache, MediaError, PasswordKey, PrivateKey, describe, openSecureFile } from '../secure.js';
import { loadPart10 } from '../dicom.js';
import { readDicomdir } from '../dicomdir.js';

const CACHE_BYTES = 128 * 1024 * 1024;

/** Plain (unencrypted) Part 10: 128-byte preamble then "DICM". */
export function isPlainPart10(bytes) {
  return bytes.length > 132 && bytes[128] === 0x44 && bytes[129] === 0x49 && bytes[130] === 0x43 && bytes[131] === 0x4d;
}

/** What the DICOMDIR needs to be opened: { plain, password, certificate, unsupported }. */
export function needs(dicomdirBytes) {
  if (isPlainPart10(dicomdirBytes)) return { plain: true };
  const { recipients } = describe(dicomdirBytes);
  const kinds = recipients.map((r) => r.kind);
  return {
    plain: false,
    password: kinds.includes('password'),
    certificate: kinds.includes('rsa-oaep'),
    unsupported: !kinds.includes('password') && !kinds.includes('rsa-oaep'),
    kinds,
  };
}

export async function makeKeys({ password, keyFileBytes, keyPassword }) {
  const keys = [];
  if (password) keys.push(new PasswordKey(password));
  if (keyFileBytes) keys.push(await PrivateKey.fromFile(keyFileBytes, keyPassword || undefined));
  return keys;
}

export class Disc {
  constructor(source) {
    this.source = source;
    this.keys = [];
    this.cache = new KeyCache();
    this.plain = false;
    this.requireDigest = false;
    this.index = null;     // readDicomdir(...) result
    this.files = new Map(); // fileId -> { part10, file, size } (LRU order)
    this.cachedBytes = 0;
    this.failed = new Map(); // fileId -> MediaError
  }

  /** Opens the DICOMDIR with the keys; throws MediaError (wrong-key ...) and keeps nothing. */
  async unlock(dicomdirBytes, keys) {
    let part10;
    if (isPlainPart10(dicomdirBytes)) {
      this.plain = true;
      part10 = dicomdirBytes;
    } else {
      const opened = await openSecureFile(dicomdirBytes, keys, this.cache);
      part10 = opened.part10;
      // A verified DICOMDIR means the disc was made with digests: every file must have one.
      this.requireDigest = opened.integrity === 'verified';
    }
    this.index = readDicomdir(await loadPart10(part10));
    this.keys = keys;
    return this.index;
  }

  /** The opened file { part10, file } for a DICOMDIR file ID; throws MediaError/DiscFileError. */
  async open(fileId) {
    const hit = this.files.get(fileId);
    if (hit) {
      this.files.delete(fileId);
      this.files.set(fileId, hit);
      return hit;
    }
    const prior = this.failed.get(fileId);
    if (prior) throw prior;
    try {
      const bytes = await this.source.read(fileId);
      let part10;
      if (this.plain) {
        if (!isPlainPart10(bytes)) throw new MediaError('malformed', `The file ${fileId} is not a DICOM file.`);
        part10 = bytes;
      } else {
        if (isPlainPart10(bytes)) {
          throw new MediaError('unprotected', `The file ${fileId} is not encrypted on an encrypted disc: it was not made with this disc and is not shown.`);
        }
        ({ part10 } = await openSecureFile(bytes, this.keys, this.cache, { requireDigest: this.requireDigest }));
      }
      const entry = { part10, file: await loadPart10(part10), size: part10.length };
      this.files.set(fileId, entry);
      this.cachedBytes += entry.size;
      for (const [key, old] of this.files) {
        if (this.cachedBytes <= CACHE_BYTES || this.files.size <= 2) break;
        this.files.delete(key);
        this.cachedBytes -= old.size;
      }
      return entry;
    } catch (err) {
      err.fileId = fileId;
      this.failed.set(fileId, err);
      throw err;
    }
  }

  /** Checks one file (read, decrypt, digest) without keeping it; true when it opens. */
  async check(fileId) {
    if (this.files.has(fileId)) return true;
    if (this.failed.has(fileId)) return false;
    try {
      await this.part10(fileId);
      return true;
    } catch {
      return false;
    }
  }

  /** Reads and decrypts without caching (for import: each file once). */
  async part10(fileId) {
    const hit = this.files.get(fileId);
    if (hit) return hit.part10;
    const entry = await this.open(fileId);
    this.files.delete(fileId);
    this.cachedBytes -= entry.size;
    return entry.part10;
  }
}

/** One plain sentence for a failure (MediaError codes of secure.js, or a missing file). */
export function explain(err, fileId) {
  const name = fileId ? `The file ${fileId}` : 'This disc';
  switch (err && err.code) {
    case 'wrong-key':
      return fileId ? `${name} cannot be opened with this password or key.` : 'The password (or key) does not open this disc. Check it and try again.';
    case 'tampered':
      return `${name} was changed or damaged after the disc was made; it is not shown.`;
    case 'truncated':
      return `${name} is incomplete (cut short); it is not shown.`;
    case 'unprotected':
      return `${name} is not protected like the rest of the disc (no integrity check); it is not shown.`;
    case 'unsupported-recipient':
      return 'This disc was made for a certificate that a browser cannot use (RSA PKCS#1 v1.5). Open it with the securepacs program: securepacs media extract.';
    case 'unsupported-algorithm':
      return `${name} uses an encryption method this viewer cannot open; open it with securepacs media extract.`;
    case 'malformed':
      return `${name} is not a readable encrypted DICOM file.`;
    case 'missing':
      return err.message;
    default:
      return `${name} could not be opened: ${(err && err.message) || err}`;
  }
}
