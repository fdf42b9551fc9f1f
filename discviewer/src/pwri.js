/**
 * Password recipients with WebCrypto: PBKDF2 (RFC 8018 5.2) once per disc, and the RFC 3211
 * PWRI-KEK key unwrap (RFC 3211 2.3.2) with its check bytes.
 *
 * WebCrypto's AES-CBC decrypt always removes PKCS #7 padding and fails when there is none,
 * but the key wrap is unpadded CBC. {@link cbcDecryptRaw} therefore appends the one block
 * that a padded encryption would have ended with: AES-CBC-encrypt of an empty plaintext with
 * IV = the last ciphertext block (that is E(K, C_last XOR 0x10..10)), so the decrypt strips
 * exactly that block and returns every original plaintext byte.
 *
 * {@link KeyCache} holds the derived KEKs keyed by (password, salt, iterations, prf, key
 * length): a disc whose files share one salt costs one PBKDF2 run. A hostile iteration count
 * is refused above {@link MAX_ITERATIONS}, so a file cannot stall the page.
 */

import { hex } from './asn1.js';
import { MediaError } from './mediaerror.js';

/** PBKDF2 iteration counts above this are refused (ours write 600,000; OpenSSL 2,048). */
export const MAX_ITERATIONS = 10_000_000;

const subtle = () => {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) {
    throw new MediaError('unsupported-algorithm',
      'This browser offers no WebCrypto here (open the page from the disc as a file, or use a current browser).');
  }
  return s;
};

/**
 * Unpadded AES-CBC decrypt of `data` (a whole number of 16-byte blocks) with WebCrypto.
 * @param {CryptoKey} key an AES-CBC key allowed to 'encrypt' and 'decrypt'
 * @param {Uint8Array} iv
 * @param {Uint8Array} data
 * @returns {Promise<Uint8Array>}
 */
export async function cbcDecryptRaw(key, iv, data) {
  if (data.length === 0 || data.length % 16) throw new MediaError('malformed', 'AES-CBC data is not whole blocks.');
  const last = data.subarray(data.length - 16);
  const pad = new Uint8Array(await subtle().encrypt({ name: 'AES-CBC', iv: last }, key, new Uint8Array(0)));
  const joined = new Uint8Array(data.length + 16);
  joined.set(data, 0);
  joined.set(pad, data.length);
  return new Uint8Array(await subtle().decrypt({ name: 'AES-CBC', iv }, key, joined));
}

/** Check printable US-ASCII (PS3.15 D.1.1); returns the octets or throws 'wrong-key'. */
export function passwordOctets(password) {
  if (typeof password !== 'string' || password.length === 0) {
    throw new MediaError('wrong-key', 'The password is empty.');
  }
  const out = new Uint8Array(password.length);
  for (let i = 0; i < password.length; i++) {
    const c = password.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      throw new MediaError('wrong-key',
        `The password has a character that is not printable US-ASCII at position ${i + 1}; `
        + 'media passwords use only unaccented letters, digits, spaces and punctuation.');
    }
    out[i] = c;
  }
  return out;
}

/**
 * Check PBKDF2 parameters before any work: iteration cap and a WebCrypto PRF.
 * @param {{ salt: Uint8Array, iterations: number, prf: {name: string, webcrypto: string|null} }} kdf
 */
export function checkKdf(kdf) {
  if (!(kdf.iterations >= 1)) throw new MediaError('malformed', 'The PBKDF2 iteration count is zero.');
  if (kdf.iterations > MAX_ITERATIONS) {
    throw new MediaError('unsupported-algorithm',
      `The file asks for ${kdf.iterations.toLocaleString('en-US')} PBKDF2 iterations, more than the `
      + `${MAX_ITERATIONS.toLocaleString('en-US')} this viewer accepts; it was refused so that the page cannot hang.`);
  }
  if (!kdf.prf.webcrypto) {
    throw new MediaError('unsupported-algorithm', `PBKDF2 with HMAC-${kdf.prf.name.toUpperCase()} is not supported in the browser.`);
  }
}

/** PBKDF2 -> raw key bytes (WebCrypto). */
export async function pbkdf2(passwordBytes, kdf, keyBytes) {
  checkKdf(kdf);
  const base = await subtle().importKey('raw', passwordBytes, 'PBKDF2', false, ['deriveBits']);
  const bits = await subtle().deriveBits(
    { name: 'PBKDF2', salt: kdf.salt, iterations: kdf.iterations, hash: kdf.prf.webcrypto }, base, keyBytes * 8);
  return new Uint8Array(bits);
}

/** An AES-CBC CryptoKey from raw bytes, for encrypt and decrypt (the unwrap needs both). */
export function aesKey(raw) {
  return subtle().importKey('raw', raw, 'AES-CBC', false, ['encrypt', 'decrypt']);
}

/**
 * The KEKs derived from passwords: one PBKDF2 run per (password, salt, iterations, prf,
 * key length). Concurrent requests for the same KEK share one derivation.
 */
export class KeyCache {
  #keks = new Map();

  constructor() {
    /** Number of PBKDF2 runs so far (for tests and the page's diagnostics). */
    this.derivations = 0;
  }

  /**
   * The AES-CBC KEK for `passwordBytes` and `kdf`.
   * @param {Uint8Array} passwordBytes
   * @param {object} kdf { salt, iterations, prf }
   * @param {number} keyBytes
   * @returns {Promise<CryptoKey>}
   */
  kek(passwordBytes, kdf, keyBytes) {
    checkKdf(kdf);
    const id = [hex(passwordBytes), hex(kdf.salt), kdf.iterations, kdf.prf.name, keyBytes].join('/');
    let found = this.#keks.get(id);
    if (!found) {
      this.derivations += 1;
      found = pbkdf2(passwordBytes, kdf, keyBytes).then(aesKey);
      found.catch(() => this.#keks.delete(id));
      this.#keks.set(id, found);
    }
    return found;
  }

  /** Forget every derived key. */
  clear() {
    this.#keks.clear();
  }

  get size() {
    return this.#keks.size;
  }

  toJSON() {
    return { derivations: this.derivations };
  }
}

/**
 * RFC 3211 2.3.2: recover the content-encryption key from a PWRI-KEK wrapped key.
 *
 * @param {CryptoKey} kek AES-CBC, encrypt + decrypt
 * @param {{ iv: Uint8Array, blockBytes: number }} wrap the inner cipher of PWRI-KEK
 * @param {Uint8Array} wrapped encryptedKey
 * @returns {Promise<Uint8Array>} the CEK
 * @throws {MediaError} 'wrong-key' when the check bytes or length byte fail,
 *   'malformed' when the wrapped key is not at least two whole blocks
 */
export async function unwrapKey(kek, wrap, wrapped) {
  const b = wrap.blockBytes;
  const n = wrapped.length;
  if (b !== 16) throw new MediaError('unsupported-algorithm', 'The password recipient uses a key wrap cipher the browser lacks.');
  if (n < 2 * b || n % b) throw new MediaError('malformed', `The wrapped key of ${n} bytes is not at least two whole blocks.`);
  // 1. the last block, decrypted with the one before as IV, is the last block of pass one
  const last = await cbcDecryptRaw(kek, wrapped.subarray(n - 2 * b, n - b), wrapped.subarray(n - b));
  // 2. with it as IV, undo pass two; 3. undo pass one with the real IV
  const first = await cbcDecryptRaw(kek, last, wrapped);
  const formatted = await cbcDecryptRaw(kek, wrap.iv, first);
  const length = formatted[0];
  const check = (formatted[1] ^ formatted[4]) === 0xff && (formatted[2] ^ formatted[5]) === 0xff
    && (formatted[3] ^ formatted[6]) === 0xff;
  if (!check || length < 3 || length > n - 4) {
    throw new MediaError('wrong-key', 'The password is wrong: it does not unlock this file.');
  }
  return formatted.slice(4, 4 + length);
}
