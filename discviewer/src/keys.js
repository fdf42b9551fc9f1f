/**
 * Keys a user gives the disc viewer: a password, or an RSA private key loaded from a file.
 *
 * - {@link PasswordKey}: printable US-ASCII only (PS3.15 D.1.1 notes), kept as octets.
 * - {@link PrivateKey.fromFile}: PEM "PRIVATE KEY" (PKCS #8, RFC 5208), PEM "ENCRYPTED PRIVATE
 *   KEY" (RFC 5958 EncryptedPrivateKeyInfo with PBES2, RFC 8018 6.2: PBKDF2 + AES-CBC),
 *   PEM "RSA PRIVATE KEY" (PKCS #1, RFC 8017 A.1.2; legacy encrypted PEM is refused), and
 *   PKCS #12 (RFC 7292) as `securepacs ca export --p12` writes it: PBES2 (PBKDF2-HMAC-SHA256,
 *   AES-256-CBC) shrouded key bag. Legacy PKCS #12 encryption (RC2, 3DES: PKCS #12 B.2 PBEs)
 *   is refused with a clear message. The PKCS #12 MAC is not checked: the key's own
 *   PBES2 decryption and structure are what prove the password.
 * - A certificate in the same file (PEM, or a plain PKCS #12 cert bag) gives the issuer and
 *   serial number, so recipients are matched first; without one every RSA-OAEP recipient of
 *   the key's size is tried (OAEP decryption fails cleanly for a wrong key).
 *
 * RSA keys are imported into WebCrypto per OAEP hash when first used (WebCrypto binds the
 * hash to the key object). Only RSA: EC keys cannot be key-transport recipients.
 */

import {
  CONTEXT, TAG, UNIVERSAL, der, derOid, expectConstructed, intBytes, octets, oid, parse, smallInt,
} from './asn1.js';
import { OID, algorithmIdentifier, cbcCipher, pbkdf2Params } from './cms.js';
import { MediaError, asn1Guard } from './mediaerror.js';
import { aesKey, passwordOctets, pbkdf2 } from './pwri.js';

const OID_EC = '1.2.840.10045.2.1';
const BAG = Object.freeze({
  key: '1.2.840.113549.1.12.10.1.1',
  shroudedKey: '1.2.840.113549.1.12.10.1.2',
  cert: '1.2.840.113549.1.12.10.1.3',
});
const OID_X509_CERT = '1.2.840.113549.1.9.22.1';
const PKCS12_PBE_PREFIX = '1.2.840.113549.1.12.1.';
const PKCS5_PBES1_PREFIX = '1.2.840.113549.1.5.';

/** A media password (PS3.15 D.1.1: printable US-ASCII); the text is never shown again. */
export class PasswordKey {
  #octets;

  /** @param {string} password */
  constructor(password) {
    this.#octets = passwordOctets(password);
  }

  /** The password octets (used by the PBKDF2 run). */
  get octets() {
    return this.#octets;
  }

  toJSON() {
    return { kind: 'password' };
  }

  toString() {
    return 'PasswordKey(<hidden>)';
  }
}

function decodePem(text) {
  const blocks = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  let m;
  while ((m = re.exec(text)) !== null && blocks.length < 64) {
    const body = m[2];
    const headers = /^[\s]*[A-Za-z-]+:/.test(body) ? body.split(/\r?\n\r?\n/)[0] : '';
    const b64 = (headers ? body.slice(body.indexOf(headers) + headers.length) : body).replace(/[\s]/g, '');
    let bytes;
    try {
      const bin = atob(b64);
      bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    } catch {
      throw new MediaError('malformed', `The ${m[1].toLowerCase()} block of the key file is not valid base64.`);
    }
    blocks.push({ label: m[1], headers, bytes });
  }
  return blocks;
}

/** { issuer: DER, serial: bytes } of an X.509 certificate (RFC 5280 4.1), or null. */
function certificateId(certDer) {
  try {
    const cert = expectConstructed(parse(certDer), TAG.SEQUENCE, UNIVERSAL, 'certificate');
    const tbs = expectConstructed(cert[0], TAG.SEQUENCE, UNIVERSAL, 'tbsCertificate');
    let i = tbs[0].is(0, CONTEXT) ? 1 : 0; // version [0]
    const serial = intBytes(tbs[i++]);
    i++; // signature
    const issuer = tbs[i];
    if (!issuer.is(TAG.SEQUENCE)) return null;
    return { issuer: issuer.der.slice(), serial: serial.slice() };
  } catch {
    return null; // the certificate is only a hint for matching
  }
}

/** PKCS #8 PrivateKeyInfo -> { pkcs8, modulusBytes } for an RSA key. */
function rsaFromPkcs8(pkcs8, wrongPasswordHint) {
  let info;
  try {
    info = expectConstructed(parse(pkcs8), TAG.SEQUENCE, UNIVERSAL, 'PrivateKeyInfo');
    if (info.length < 3) throw new MediaError('malformed', 'PrivateKeyInfo');
  } catch (err) {
    if (wrongPasswordHint) throw new MediaError('wrong-key', 'The password does not open this key file.');
    throw new MediaError('malformed', 'The key file does not hold a readable private key.');
  }
  return asn1Guard(() => {
    const alg = algorithmIdentifier(info[1], 'the key algorithm');
    if (alg.oid === OID_EC) {
      throw new MediaError('unsupported-recipient',
        'This is an EC key; disc certificate recipients need the RSA key their certificate was made for.');
    }
    if (alg.oid !== OID.rsaEncryption) {
      throw new MediaError('unsupported-recipient', `The key file holds a ${alg.oid} key, not an RSA key.`);
    }
    const rsa = expectConstructed(parse(octets(info[2])), TAG.SEQUENCE, UNIVERSAL, 'RSAPrivateKey');
    const modulus = intBytes(rsa[1]);
    return { pkcs8: pkcs8.slice(), modulusBytes: modulus.length };
  }, 'The private key');
}

function pkcs1ToPkcs8(pkcs1) {
  const algorithm = der(0x30, derOid(OID.rsaEncryption), new Uint8Array([0x05, 0x00]));
  return der(0x30, der(0x02, new Uint8Array([0])), algorithm, der(0x04, pkcs1));
}

function utf8(password) {
  return new TextEncoder().encode(password);
}

/** Decrypt PBES2 (RFC 8018 6.2) data with `password`; 'wrong-key' on bad padding. */
async function pbes2Decrypt(algEl, ciphertext, password, what) {
  const alg = algorithmIdentifier(algEl, `${what} encryption`);
  if (alg.oid.startsWith(PKCS12_PBE_PREFIX) || (alg.oid.startsWith(PKCS5_PBES1_PREFIX) && alg.oid !== OID.pbes2)) {
    throw new MediaError('unsupported-algorithm',
      `The ${what} uses legacy encryption (PKCS #12 / PBES1: RC2 or 3DES) that browsers cannot decrypt; `
      + 'export it again with PBES2/AES (securepacs ca export --p12 without --legacy, or as PEM).');
  }
  if (alg.oid !== OID.pbes2 || !alg.params) {
    throw new MediaError('unsupported-algorithm', `The ${what} uses the encryption ${alg.oid}, which is not supported.`);
  }
  if (password === undefined || password === null || password === '') {
    throw new MediaError('wrong-key', `The ${what} is encrypted: give its password.`);
  }
  const parts = expectConstructed(alg.params, TAG.SEQUENCE, UNIVERSAL, 'PBES2 parameters');
  if (parts.length !== 2) throw new MediaError('malformed', 'The PBES2 parameters are damaged.');
  const kdfAlg = algorithmIdentifier(parts[0], 'PBES2 key derivation');
  if (kdfAlg.oid !== OID.pbkdf2 || !kdfAlg.params) {
    throw new MediaError('unsupported-algorithm', `The ${what} uses key derivation ${kdfAlg.oid}, not PBKDF2.`);
  }
  const kdf = pbkdf2Params(kdfAlg.params);
  const cipher = cbcCipher(algorithmIdentifier(parts[1], 'PBES2 cipher'), `The ${what}`);
  if (!cipher.webcrypto) {
    throw new MediaError('unsupported-algorithm', `The ${what} is encrypted with ${cipher.name}, which browsers cannot decrypt.`);
  }
  if (kdf.keyLength !== null && kdf.keyLength !== cipher.keyBytes) {
    throw new MediaError('malformed', `The ${what}: PBKDF2 key length does not fit ${cipher.name}.`);
  }
  const key = await aesKey(await pbkdf2(utf8(password), kdf, cipher.keyBytes));
  try {
    return new Uint8Array(await globalThis.crypto.subtle.decrypt({ name: 'AES-CBC', iv: cipher.iv }, key, ciphertext));
  } catch {
    throw new MediaError('wrong-key', 'The password does not open this key file.');
  }
}

async function fromEncryptedPkcs8(epki, password) {
  const parts = asn1Guard(() => expectConstructed(parse(epki), TAG.SEQUENCE, UNIVERSAL, 'EncryptedPrivateKeyInfo'),
    'The encrypted private key');
  if (parts.length !== 2 || !parts[1].is(TAG.OCTET_STRING)) {
    throw new MediaError('malformed', 'The encrypted private key is damaged.');
  }
  const plain = await pbes2Decrypt(parts[0], octets(parts[1]), password, 'private key');
  return rsaFromPkcs8(plain, true);
}

/** PKCS #12: { key: {pkcs8, modulusBytes}, certs: [DER] }. */
async function fromPkcs12(pfxBytes, password) {
  const contentInfos = asn1Guard(() => {
    const pfx = expectConstructed(parse(pfxBytes), TAG.SEQUENCE, UNIVERSAL, 'PFX');
    if (pfx.length < 2 || smallInt(pfx[0]) !== 3) throw new MediaError('malformed', 'not a PKCS #12 file');
    const auth = expectConstructed(pfx[1], TAG.SEQUENCE, UNIVERSAL, 'authSafe');
    if (oid(auth[0]) !== OID.data) {
      throw new MediaError('unsupported-algorithm', 'This PKCS #12 file uses public-key integrity mode, which is not supported.');
    }
    const inner = expectConstructed(auth[1], 0, CONTEXT, 'authSafe content');
    return expectConstructed(parse(octets(inner[0])), TAG.SEQUENCE, UNIVERSAL, 'AuthenticatedSafe');
  }, 'The PKCS #12 file');
  const found = { key: null, certs: [] };
  const readBags = async (safeContentsDer, fromEncrypted) => {
    const bags = asn1Guard(() => expectConstructed(parse(safeContentsDer), TAG.SEQUENCE, UNIVERSAL, 'SafeContents'),
      fromEncrypted ? 'The PKCS #12 file (or its password)' : 'The PKCS #12 file');
    for (const bag of bags) {
      const [idEl, valueEl] = asn1Guard(() => expectConstructed(bag, TAG.SEQUENCE, UNIVERSAL, 'SafeBag'), 'A PKCS #12 bag');
      const id = oid(idEl);
      const value = asn1Guard(() => expectConstructed(valueEl, 0, CONTEXT, 'bag value')[0], 'A PKCS #12 bag');
      if (id === BAG.shroudedKey && !found.key) {
        found.key = await fromEncryptedPkcs8(value.der.slice(), password);
      } else if (id === BAG.key && !found.key) {
        found.key = rsaFromPkcs8(value.der.slice(), false);
      } else if (id === BAG.cert) {
        asn1Guard(() => {
          const cb = expectConstructed(value, TAG.SEQUENCE, UNIVERSAL, 'CertBag');
          if (oid(cb[0]) === OID_X509_CERT) found.certs.push(octets(expectConstructed(cb[1], 0, CONTEXT, 'cert')[0]).slice());
        }, 'A PKCS #12 certificate');
      }
    }
  };
  const encrypted = [];
  for (const ci of contentInfos) {
    const [typeEl, contentEl] = asn1Guard(() => expectConstructed(ci, TAG.SEQUENCE, UNIVERSAL, 'ContentInfo'), 'The PKCS #12 file');
    const type = oid(typeEl);
    if (type === OID.data) {
      const body = asn1Guard(() => octets(expectConstructed(contentEl, 0, CONTEXT, 'data')[0]), 'The PKCS #12 file');
      await readBags(body, false);
    } else if (type === OID.encryptedData) {
      encrypted.push(contentEl);
    }
  }
  // encrypted content infos (usually the certificates) are opened only if no key was found
  for (const contentEl of encrypted) {
    if (found.key) break;
    const { algEl, data } = asn1Guard(() => {
      const ed = expectConstructed(expectConstructed(contentEl, 0, CONTEXT, 'encryptedData')[0], TAG.SEQUENCE, UNIVERSAL, 'EncryptedData');
      const eci = expectConstructed(ed[1], TAG.SEQUENCE, UNIVERSAL, 'EncryptedContentInfo');
      return { algEl: eci[1], data: octets(eci[2]) };
    }, 'The PKCS #12 file');
    await readBags(await pbes2Decrypt(algEl, data, password, 'PKCS #12 file'), true);
  }
  if (!found.key) throw new MediaError('malformed', 'The PKCS #12 file holds no private key.');
  return found;
}

/** An RSA private key for certificate recipients (RSA-OAEP with WebCrypto). */
export class PrivateKey {
  #pkcs8;
  #imported = new Map();

  constructor(pkcs8, modulusBytes, certIds) {
    this.#pkcs8 = pkcs8;
    /** Size of the RSA modulus in bytes (= length of an encrypted key for it). */
    this.modulusBytes = modulusBytes;
    /** [{ issuer, serial }] of the certificates found with the key (may be empty). */
    this.certificates = certIds;
  }

  /**
   * Read a key file.
   * @param {Uint8Array} bytes the file
   * @param {string|undefined} password for an encrypted PEM key or a PKCS #12 file
   * @returns {Promise<PrivateKey>}
   * @throws {MediaError} 'wrong-key' (password missing or wrong), 'malformed',
   *   'unsupported-algorithm' (legacy encryption), 'unsupported-recipient' (not RSA)
   */
  static async fromFile(bytes, password) {
    if (!(bytes instanceof Uint8Array)) throw new TypeError('a key file must be a Uint8Array');
    let start = 0;
    while (start < bytes.length && (bytes[start] === 0x20 || bytes[start] === 0x0a || bytes[start] === 0x0d || bytes[start] === 0x09)) start++;
    if (bytes[start] === 0x2d || (bytes[start] >= 0x41 && bytes[start] <= 0x7a)) {
      return PrivateKey.#fromPem(new TextDecoder('latin1').decode(bytes.subarray(0, Math.min(bytes.length, 1 << 20))), password);
    }
    if (bytes[0] === 0x30) {
      let looksPfx = false;
      try {
        const top = parse(bytes).children();
        looksPfx = top.length >= 2 && top[0].is(TAG.INTEGER) && top[1].is(TAG.SEQUENCE);
        looksPfx = looksPfx && smallInt(top[0]) === 3;
      } catch {
        throw new MediaError('malformed', 'The key file is damaged or truncated.');
      }
      if (looksPfx) {
        const { key, certs } = await fromPkcs12(bytes, password);
        return new PrivateKey(key.pkcs8, key.modulusBytes, certs.map(certificateId).filter(Boolean));
      }
      const key = rsaFromPkcs8(bytes, false);
      return new PrivateKey(key.pkcs8, key.modulusBytes, []);
    }
    throw new MediaError('malformed', 'This is not a key file (PEM or PKCS #12 expected).');
  }

  static async #fromPem(text, password) {
    const blocks = decodePem(text);
    const certs = blocks.filter((b) => b.label === 'CERTIFICATE').map((b) => certificateId(b.bytes)).filter(Boolean);
    const keyBlock = blocks.find((b) => /PRIVATE KEY$/.test(b.label));
    if (!keyBlock) {
      throw new MediaError('malformed', blocks.length
        ? 'The PEM file holds no private key (a certificate alone cannot open a disc).'
        : 'This is not a PEM key file.');
    }
    let key;
    if (keyBlock.label === 'PRIVATE KEY') {
      key = rsaFromPkcs8(keyBlock.bytes, false);
    } else if (keyBlock.label === 'ENCRYPTED PRIVATE KEY') {
      key = await fromEncryptedPkcs8(keyBlock.bytes, password);
    } else if (keyBlock.label === 'RSA PRIVATE KEY') {
      if (/ENCRYPTED/.test(keyBlock.headers)) {
        throw new MediaError('unsupported-algorithm',
          'This key uses the old OpenSSL PEM encryption, which browsers cannot decrypt; convert it with '
          + '"openssl pkcs8 -topk8 -v2 aes-256-cbc" first.');
      }
      key = rsaFromPkcs8(pkcs1ToPkcs8(keyBlock.bytes), false);
    } else {
      throw new MediaError('unsupported-recipient',
        `The key file holds a ${keyBlock.label.toLowerCase()}; disc certificate recipients need an RSA key.`);
    }
    return new PrivateKey(key.pkcs8, key.modulusBytes, certs);
  }

  /** The WebCrypto RSA-OAEP key for `hash` ('SHA-1', 'SHA-256', ...), imported once. */
  oaepKey(hash) {
    let found = this.#imported.get(hash);
    if (!found) {
      found = globalThis.crypto.subtle.importKey('pkcs8', this.#pkcs8, { name: 'RSA-OAEP', hash }, false, ['decrypt']);
      this.#imported.set(hash, found);
    }
    return found;
  }

  toJSON() {
    return { kind: 'private-key', modulusBits: this.modulusBytes * 8 };
  }
}
