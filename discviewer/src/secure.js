/**
 * Open a Secure DICOM File (PS3.10 7.4, PS3.15 D.1.1) in the browser: the disc viewer's
 * contract module. CMS parsing is in cms.js, the password recipient in pwri.js, key files in
 * keys.js; this module tries the keys against the recipients, decrypts the content
 * (AES-CBC, WebCrypto) and checks the inner DigestedData before anything is returned.
 *
 * Outcomes: { part10, integrity: 'verified' } (digest checked), { integrity: 'unprotected' }
 * (plain id-data as GDCM writes; refused with requireDigest), or a MediaError whose code
 * tells the page what to say.
 */

import { equalBytes } from './asn1.js';
import { parseDigested, parseEnvelope, summarizeRecipient } from './cms.js';
import { PasswordKey, PrivateKey } from './keys.js';
import { MediaError } from './mediaerror.js';
import { KeyCache, MAX_ITERATIONS, unwrapKey } from './pwri.js';

export { MediaError, PasswordKey, PrivateKey, KeyCache, MAX_ITERATIONS };

/**
 * What a Secure DICOM File declares, without a key.
 * @param {Uint8Array} bytes
 * @returns {{ recipients: object[], content: { algorithm: string, type: string } }}
 */
export function describe(bytes) {
  const env = parseEnvelope(bytes);
  return {
    recipients: env.recipients.map(summarizeRecipient),
    content: {
      algorithm: env.cipher ? env.cipher.name : (env.cipherProblem ? 'unsupported' : 'unknown'),
      type: env.contentType,
    },
  };
}

function* attempts(env, keys) {
  for (const key of keys) {
    if (key instanceof PasswordKey) {
      for (const r of env.recipients) if (r.kind === 'password') yield { key, r };
    }
  }
  for (const key of keys) {
    if (!(key instanceof PrivateKey)) continue;
    const oaep = env.recipients.filter((r) => r.kind === 'rsa-oaep' && !r.problem);
    const named = (r) => r.rid && r.rid.serial && key.certificates.some(
      (c) => equalBytes(c.serial, r.rid.serial) && equalBytes(c.issuer, r.rid.issuer));
    for (const r of oaep) if (named(r)) yield { key, r };
    for (const r of oaep) if (!named(r) && r.encryptedKey.length === key.modulusBytes) yield { key, r };
  }
}

async function contentKey({ key, r }, cache) {
  if (r.problem) throw r.problem;
  if (r.kind === 'password') {
    const kek = await cache.kek(key.octets, r.kdf, r.wrap.keyBytes);
    return unwrapKey(kek, r.wrap, r.encryptedKey);
  }
  const hash = r.oaep.hash.webcrypto;
  if (!hash || r.oaep.mgfHash.webcrypto !== hash) {
    throw new MediaError('unsupported-recipient',
      `This file's RSA-OAEP recipient uses ${r.oaep.hash.name} with MGF1-${r.oaep.mgfHash.name}, which browsers cannot decrypt.`);
  }
  const cryptoKey = await key.oaepKey(hash);
  try {
    const params = { name: 'RSA-OAEP' };
    if (r.oaep.label.length) params.label = r.oaep.label;
    return new Uint8Array(await globalThis.crypto.subtle.decrypt(params, cryptoKey, r.encryptedKey));
  } catch {
    throw new MediaError('wrong-key', 'The private key does not open this file.');
  }
}

function looksDigested(plaintext) {
  try {
    parseDigested(plaintext);
    return true;
  } catch {
    return false;
  }
}

/**
 * Decrypt one Secure DICOM File.
 *
 * @param {Uint8Array} bytes the file as read from the disc
 * @param {Array<PasswordKey|PrivateKey>} keys
 * @param {KeyCache} cache derived KEKs (one per disc)
 * @param {{ requireDigest?: boolean }} options refuse plain id-data content
 * @returns {Promise<{ part10: Uint8Array, integrity: 'verified'|'unprotected', digest?: string }>}
 * @throws {MediaError}
 */
export async function openSecureFile(bytes, keys, cache, { requireDigest = false } = {}) {
  if (!(cache instanceof KeyCache)) throw new TypeError('openSecureFile needs a KeyCache');
  const env = parseEnvelope(bytes);
  if (env.cipherProblem) throw env.cipherProblem;
  if (!env.cipher.webcrypto) {
    throw new MediaError('unsupported-algorithm',
      `This file is encrypted with ${env.cipher.name} (Triple-DES), which browsers cannot decrypt; open it with securepacs (media extract).`);
  }
  const block = env.cipher.blockBytes;
  if (env.ciphertext.length === 0 || env.ciphertext.length % block) {
    throw new MediaError('truncated', 'The file is truncated: its encrypted content is not whole cipher blocks.');
  }
  let tried = 0;
  let problem = null;
  for (const attempt of attempts(env, keys)) {
    tried += 1;
    let cek;
    try {
      cek = await contentKey(attempt, cache);
    } catch (err) {
      if (!(err instanceof MediaError)) throw err;
      if (err.code === 'wrong-key') continue;
      problem = problem || err;
      continue;
    }
    if (cek.length !== env.cipher.keyBytes) {
      throw new MediaError('tampered', `The file was altered: the recovered key has ${cek.length} bytes, ${env.cipher.name} needs ${env.cipher.keyBytes}.`);
    }
    const aes = await globalThis.crypto.subtle.importKey('raw', cek, 'AES-CBC', false, ['decrypt']);
    let plaintext;
    try {
      plaintext = new Uint8Array(await globalThis.crypto.subtle.decrypt({ name: 'AES-CBC', iv: env.cipher.iv }, aes, env.ciphertext));
    } catch {
      throw new MediaError('tampered', 'The file was altered: its content does not decrypt (bad padding).');
    }
    return inner(env, plaintext, requireDigest);
  }
  if (problem) throw problem;
  if (tried > 0) {
    throw new MediaError('wrong-key', keys.some((k) => k instanceof PasswordKey)
      ? 'The password is wrong: it does not unlock this file.'
      : 'The private key does not open this file.');
  }
  const damaged = env.recipients.find((r) => r.problem);
  if (damaged && (damaged.problem.code !== 'unsupported-algorithm' || keys.some((k) => k instanceof PasswordKey))) {
    throw damaged.problem;
  }
  const kinds = new Set(env.recipients.map((r) => r.kind));
  const canPassword = kinds.has('password');
  const canOaep = env.recipients.some((r) => r.kind === 'rsa-oaep' && !r.problem);
  if (!canPassword && !canOaep) {
    throw new MediaError('unsupported-recipient', kinds.has('rsa-pkcs1')
      ? 'This file is encrypted for a certificate with RSA PKCS#1 v1.5, which browsers cannot decrypt; open it with securepacs (media extract) or ask for a disc made with OAEP.'
      : 'This file has no recipient a browser can open (password or RSA-OAEP certificate).');
  }
  throw new MediaError('wrong-key', canPassword
    ? 'This file needs a password' + (canOaep ? ' or a private key.' : '.')
    : 'This file needs the private key of a certificate it was made for.');
}

async function inner(env, plaintext, requireDigest) {
  if (env.contentType === 'data') {
    if (looksDigested(plaintext)) {
      // the outer content type says id-data but the content is a DigestedData: someone
      // switched the type (one unencrypted byte) to turn the digest check off
      throw new MediaError('unprotected', 'The file is not integrity-protected as it stands: its content type was changed from DigestedData to plain data, so it was refused as altered.');
    }
    if (requireDigest) {
      throw new MediaError('unprotected', 'This file has no integrity protection (no digest), unlike the rest of this disc: it was refused as possibly altered.');
    }
    return { part10: plaintext, integrity: 'unprotected' };
  }
  if (env.contentType !== 'digested-data') {
    throw new MediaError('unsupported-algorithm', `The encrypted content is ${env.contentType}; only DigestedData and plain data are supported.`);
  }
  const d = parseDigested(plaintext);
  const actual = new Uint8Array(await globalThis.crypto.subtle.digest(d.digest.webcrypto, d.content));
  if (!equalBytes(actual, d.expected)) {
    throw new MediaError('tampered', `The file was altered: its ${d.digest.webcrypto} digest does not match.`);
  }
  return { part10: d.content.slice(), integrity: 'verified', digest: d.digest.name };
}
