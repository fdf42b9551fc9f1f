// STUB of src/secure.js (contract): treats plain Part 10 files as "decrypted"; password 'wrong' fails.
export class MediaError extends Error { constructor(code, message) { super(message); this.code = code; } }
export class PasswordKey { constructor(password) { this.password = password; } }
export class PrivateKey { static async fromFile() { throw new MediaError('malformed', 'stub: no key files'); } }
export class KeyCache { constructor() { this.derivations = 0; } }
export function describe(bytes) {
  if (bytes.length > 4 && bytes[0] === 0x30) return { recipients: [{ kind: 'rsa-pkcs1' }], content: { algorithm: 'aes-256-cbc' } };
  return { recipients: [{ kind: 'password' }], content: { algorithm: 'aes-256-cbc' } };
}
export async function openSecureFile(bytes, keys, cache, { requireDigest = false } = {}) {
  if (!keys.some((k) => k instanceof PasswordKey && k.password !== 'wrong')) throw new MediaError('wrong-key', 'The password does not open this file.');
  if (cache.derivations === 0) cache.derivations = 1;
  if (bytes.length < 132 || String.fromCharCode(...bytes.subarray(128, 132)) !== 'DICM') throw new MediaError('malformed', 'not a stub file');
  return { part10: bytes, integrity: 'verified' };
}
