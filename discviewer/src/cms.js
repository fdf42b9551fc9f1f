/**
 * Read a Secure DICOM File's CMS structure (PS3.10 7.4, PS3.15 D.1.1): a ContentInfo
 * (RFC 5652 3) of type EnvelopedData (RFC 5652 6.1), without any key.
 *
 * - RecipientInfos (RFC 5652 6.2): KeyTransRecipientInfo with rsaEncryption (RFC 3370 4.2.1)
 *   or RSAES-OAEP and its parameters (RFC 3560 / RFC 8017 A.2.1: hash, MGF1 hash, label);
 *   PasswordRecipientInfo (RFC 3211) with PBKDF2 parameters (RFC 8018 A.2; no `prf` means
 *   HMAC-SHA1) and the PWRI-KEK key-encryption algorithm whose parameter is the inner CBC
 *   cipher and IV. Anything else is reported as kind 'other'. A damaged RecipientInfo is kept
 *   with a `problem` (a MediaError) so that the others can still be tried.
 * - EncryptedContentInfo: AES-128/192/256-CBC (RFC 3565; IV parameter) and des-ede3-cbc
 *   (RFC 3370 5.1; recognised, not decrypted here), the encrypted content (a constructed
 *   [0] as `openssl cms -stream` writes it is joined).
 * - The decrypted content: DigestedData (RFC 5652 7) around id-data, with SHA-1/256/384/512;
 *   or plain id-data (no integrity protection; GDCM writes that).
 */

import {
  CONTEXT, TAG, UNIVERSAL, expectConstructed, hex, octets, oid, parse, smallInt, intBytes,
} from './asn1.js';
import { MediaError, asn1Guard } from './mediaerror.js';

export const OID = Object.freeze({
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  envelopedData: '1.2.840.113549.1.7.3',
  digestedData: '1.2.840.113549.1.7.5',
  encryptedData: '1.2.840.113549.1.7.6',
  authEnvelopedData: '1.2.840.113549.1.9.16.1.23',
  rsaEncryption: '1.2.840.113549.1.1.1',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  pSpecified: '1.2.840.113549.1.1.9',
  pbkdf2: '1.2.840.113549.1.5.12',
  pbes2: '1.2.840.113549.1.5.13',
  pwriKek: '1.2.840.113549.1.9.16.3.9',
  desEde3Cbc: '1.2.840.113549.3.7',
});

/** Digest algorithms by OID: name and the WebCrypto name (null: not in WebCrypto). */
export const DIGESTS = Object.freeze({
  '1.3.14.3.2.26': { name: 'sha1', webcrypto: 'SHA-1' },
  '2.16.840.1.101.3.4.2.4': { name: 'sha224', webcrypto: null },
  '2.16.840.1.101.3.4.2.1': { name: 'sha256', webcrypto: 'SHA-256' },
  '2.16.840.1.101.3.4.2.2': { name: 'sha384', webcrypto: 'SHA-384' },
  '2.16.840.1.101.3.4.2.3': { name: 'sha512', webcrypto: 'SHA-512' },
});

/** PBKDF2 PRFs by OID (RFC 8018 B.1.2). */
export const PRFS = Object.freeze({
  '1.2.840.113549.2.7': { name: 'sha1', webcrypto: 'SHA-1' },
  '1.2.840.113549.2.8': { name: 'sha224', webcrypto: null },
  '1.2.840.113549.2.9': { name: 'sha256', webcrypto: 'SHA-256' },
  '1.2.840.113549.2.10': { name: 'sha384', webcrypto: 'SHA-384' },
  '1.2.840.113549.2.11': { name: 'sha512', webcrypto: 'SHA-512' },
});

/** CBC ciphers by OID: name, key and block (IV) sizes; `webcrypto` false: not decryptable here. */
export const CIPHERS = Object.freeze({
  '2.16.840.1.101.3.4.1.2': { name: 'aes-128-cbc', keyBytes: 16, blockBytes: 16, webcrypto: true },
  '2.16.840.1.101.3.4.1.22': { name: 'aes-192-cbc', keyBytes: 24, blockBytes: 16, webcrypto: true },
  '2.16.840.1.101.3.4.1.42': { name: 'aes-256-cbc', keyBytes: 32, blockBytes: 16, webcrypto: true },
  '1.2.840.113549.3.7': { name: 'des-ede3-cbc', keyBytes: 24, blockBytes: 8, webcrypto: false },
});

const CONTENT_TYPES = Object.freeze({
  [OID.data]: 'data',
  [OID.signedData]: 'signed-data',
  [OID.digestedData]: 'digested-data',
  [OID.encryptedData]: 'encrypted-data',
  [OID.envelopedData]: 'enveloped-data',
});

function malformed(message) {
  return new MediaError('malformed', message);
}

/** An AlgorithmIdentifier: { oid, params (Element or null) }. */
export function algorithmIdentifier(el, what) {
  const parts = expectConstructed(el, TAG.SEQUENCE, UNIVERSAL, what);
  if (parts.length < 1 || parts.length > 2) throw malformed(`${what} is not an AlgorithmIdentifier`);
  const params = parts.length === 2 && !parts[1].is(TAG.NULL) ? parts[1] : null;
  return { oid: oid(parts[0]), params };
}

/** A CBC cipher with its IV from an AlgorithmIdentifier, or an unsupported-algorithm error. */
export function cbcCipher(alg, what) {
  const spec = CIPHERS[alg.oid];
  if (!spec) {
    throw new MediaError('unsupported-algorithm',
      `${what} uses the algorithm ${alg.oid}, which this viewer cannot decrypt (AES-CBC is supported).`);
  }
  if (!alg.params || !alg.params.is(TAG.OCTET_STRING)) throw malformed(`${what}: the ${spec.name} IV is missing`);
  const iv = octets(alg.params);
  if (iv.length !== spec.blockBytes) throw malformed(`${what}: the ${spec.name} IV is not ${spec.blockBytes} bytes`);
  return { ...spec, oid: alg.oid, iv };
}

/** PBKDF2-params (RFC 8018 A.2) -> { salt, iterations, keyLength|null, prf: {name, webcrypto} }. */
export function pbkdf2Params(el, what = 'PBKDF2 parameters') {
  const parts = expectConstructed(el, TAG.SEQUENCE, UNIVERSAL, what);
  if (parts.length < 2 || parts.length > 4) throw malformed(`${what} are damaged`);
  if (!parts[0].is(TAG.OCTET_STRING)) {
    throw new MediaError('unsupported-algorithm', `${what}: a salt from another source is not supported.`);
  }
  const salt = octets(parts[0]);
  const iterations = smallInt(parts[1]);
  let keyLength = null;
  let prf = PRFS['1.2.840.113549.2.7']; // DEFAULT algid-hmacWithSHA1
  let i = 2;
  if (i < parts.length && parts[i].is(TAG.INTEGER)) keyLength = smallInt(parts[i++]);
  if (i < parts.length) {
    const alg = algorithmIdentifier(parts[i++], `${what} (prf)`);
    prf = PRFS[alg.oid];
    if (!prf) throw new MediaError('unsupported-algorithm', `${what}: the PBKDF2 function ${alg.oid} is not supported.`);
  }
  if (i !== parts.length) throw malformed(`${what} are damaged`);
  if (salt.length === 0) throw malformed(`${what}: the salt is empty`);
  return { salt, iterations, keyLength, prf };
}

function parsePwri(el) {
  // PasswordRecipientInfo ::= [3] IMPLICIT SEQUENCE { version, keyDerivationAlgorithm [0]
  //   IMPLICIT AlgorithmIdentifier OPTIONAL, keyEncryptionAlgorithm, encryptedKey }
  const parts = el.children();
  if (parts.length !== 3 && parts.length !== 4) throw malformed('a password recipient is damaged');
  smallInt(parts[0]);
  let i = 1;
  let kdf = null;
  if (parts[i].is(0, CONTEXT)) {
    const kdParts = parts[i++].children();
    if (kdParts.length < 1 || kdParts.length > 2) throw malformed('the password recipient key derivation is damaged');
    const kdOid = oid(kdParts[0]);
    if (kdOid !== OID.pbkdf2) {
      throw new MediaError('unsupported-algorithm', `a password recipient uses key derivation ${kdOid}, not PBKDF2.`);
    }
    if (kdParts.length !== 2) throw malformed('the PBKDF2 parameters are missing');
    kdf = pbkdf2Params(kdParts[1]);
  } else {
    throw new MediaError('unsupported-algorithm', 'a password recipient has no key derivation algorithm.');
  }
  const kea = algorithmIdentifier(parts[i++], 'the password recipient key encryption');
  if (kea.oid !== OID.pwriKek) {
    throw new MediaError('unsupported-algorithm', `a password recipient uses key encryption ${kea.oid}, not PWRI-KEK.`);
  }
  if (!kea.params) throw malformed('the PWRI-KEK parameters are missing');
  const wrap = cbcCipher(algorithmIdentifier(kea.params, 'the PWRI-KEK cipher'), 'the password recipient key wrap');
  if (!parts[i].is(TAG.OCTET_STRING)) throw malformed('the wrapped key of a password recipient is missing');
  const encryptedKey = octets(parts[i]);
  if (kdf.keyLength !== null && kdf.keyLength !== wrap.keyBytes) {
    throw malformed(`the PBKDF2 key length ${kdf.keyLength} does not fit ${wrap.name}`);
  }
  return { kind: 'password', kdf, wrap, encryptedKey };
}

/** RSAES-OAEP-params (RFC 8017 A.2.1) -> { hash, mgfHash, label } with names and WebCrypto names. */
function oaepParams(el) {
  const sha1 = DIGESTS['1.3.14.3.2.26'];
  const out = { hash: sha1, mgfHash: sha1, label: new Uint8Array(0) };
  if (!el) return out;
  for (const part of expectConstructed(el, TAG.SEQUENCE, UNIVERSAL, 'the RSAES-OAEP parameters')) {
    if (part.cls !== CONTEXT || !part.constructed) throw malformed('the RSAES-OAEP parameters are damaged');
    const inner = part.children();
    if (inner.length !== 1) throw malformed('the RSAES-OAEP parameters are damaged');
    const alg = algorithmIdentifier(inner[0], 'an RSAES-OAEP parameter');
    if (part.tag === 0) {
      out.hash = DIGESTS[alg.oid] || { name: alg.oid, webcrypto: null };
    } else if (part.tag === 1) {
      if (alg.oid !== OID.mgf1 || !alg.params) {
        throw new MediaError('unsupported-recipient', 'an RSAES-OAEP recipient uses a mask generation other than MGF1.');
      }
      const h = algorithmIdentifier(alg.params, 'the MGF1 hash');
      out.mgfHash = DIGESTS[h.oid] || { name: h.oid, webcrypto: null };
    } else if (part.tag === 2) {
      if (alg.oid !== OID.pSpecified || !alg.params || !alg.params.is(TAG.OCTET_STRING)) {
        throw malformed('the RSAES-OAEP label source is damaged');
      }
      out.label = octets(alg.params);
    } else {
      throw malformed('the RSAES-OAEP parameters are damaged');
    }
  }
  return out;
}

function parseKtri(el) {
  // KeyTransRecipientInfo ::= SEQUENCE { version, rid, keyEncryptionAlgorithm, encryptedKey }
  const parts = el.children();
  if (parts.length !== 4) throw malformed('a certificate recipient is damaged');
  smallInt(parts[0]);
  const ridEl = parts[1];
  let rid;
  if (ridEl.is(TAG.SEQUENCE)) {
    const ias = ridEl.children();
    if (ias.length !== 2 || !ias[0].is(TAG.SEQUENCE)) throw malformed('a certificate recipient identifier is damaged');
    rid = { issuer: ias[0].der, serial: intBytes(ias[1]) };
  } else if (ridEl.is(0, CONTEXT) && !ridEl.constructed) {
    rid = { subjectKeyIdentifier: ridEl.content };
  } else {
    throw malformed('a certificate recipient identifier is damaged');
  }
  const kea = algorithmIdentifier(parts[2], 'the certificate recipient key encryption');
  if (!parts[3].is(TAG.OCTET_STRING)) throw malformed('the encrypted key of a certificate recipient is missing');
  const encryptedKey = octets(parts[3]);
  if (kea.oid === OID.rsaEncryption) return { kind: 'rsa-pkcs1', rid, encryptedKey };
  if (kea.oid === OID.rsaesOaep) return { kind: 'rsa-oaep', rid, oaep: oaepParams(kea.params), encryptedKey };
  return { kind: 'other', type: `key transport ${kea.oid}`, rid, encryptedKey };
}

const OTHER_RECIPIENTS = { 1: 'key agreement', 2: 'key encryption key', 4: 'other' };

function parseRecipient(el) {
  const guess = el.is(TAG.SEQUENCE) ? 'rsa' : (el.is(3, CONTEXT) ? 'password' : 'other');
  try {
    return asn1Guard(() => {
      if (el.is(TAG.SEQUENCE)) return parseKtri(el);
      if (el.is(3, CONTEXT) && el.constructed) return parsePwri(el);
      return { kind: 'other', type: `${OTHER_RECIPIENTS[el.tag] || 'unknown'} recipient` };
    }, 'a recipient entry');
  } catch (err) {
    if (!(err instanceof MediaError)) throw err;
    return { kind: guess === 'password' ? 'password' : 'other', type: guess, problem: err };
  }
}

/**
 * Parse a Secure DICOM File's ContentInfo / EnvelopedData.
 *
 * @param {Uint8Array} bytes the whole file
 * @returns {{ recipients: object[], contentType: string, contentTypeOid: string,
 *   cipher: object|null, cipherProblem: MediaError|null, ciphertext: Uint8Array }}
 * @throws {MediaError} 'malformed' or 'truncated' (structure), never anything else
 */
export function parseEnvelope(bytes) {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('a Secure DICOM File must be a Uint8Array');
  if (bytes.length < 2 || bytes[0] !== 0x30) {
    throw malformed('This is not an encrypted DICOM file (no CMS structure at the start).');
  }
  return asn1Guard(() => {
    const top = parse(bytes);
    const ci = expectConstructed(top, TAG.SEQUENCE, UNIVERSAL, 'the CMS ContentInfo');
    if (ci.length !== 2) throw malformed('The CMS ContentInfo is damaged.');
    const type = oid(ci[0]);
    if (type !== OID.envelopedData) {
      throw malformed(`The CMS content is ${CONTENT_TYPES[type] || type}, not EnvelopedData.`);
    }
    const explicit = expectConstructed(ci[1], 0, CONTEXT, 'the CMS content');
    if (explicit.length !== 1) throw malformed('The CMS content is damaged.');
    const ed = expectConstructed(explicit[0], TAG.SEQUENCE, UNIVERSAL, 'the EnvelopedData');
    let i = 0;
    if (!ed[i]) throw malformed('The EnvelopedData is empty.');
    smallInt(ed[i++]); // version
    if (ed[i] && ed[i].is(0, CONTEXT)) i++; // originatorInfo
    const ris = expectConstructed(ed[i++], TAG.SET, UNIVERSAL, 'the RecipientInfos');
    if (ris.length === 0) throw malformed('The EnvelopedData has no recipients.');
    const eci = expectConstructed(ed[i++], TAG.SEQUENCE, UNIVERSAL, 'the EncryptedContentInfo');
    if (i < ed.length && ed[i].is(1, CONTEXT)) i++; // unprotectedAttrs
    if (i !== ed.length) throw malformed('The EnvelopedData has unexpected fields.');
    if (eci.length < 2 || eci.length > 3) throw malformed('The EncryptedContentInfo is damaged.');
    const contentTypeOid = oid(eci[0]);
    const alg = algorithmIdentifier(eci[1], 'the content encryption algorithm');
    let cipher = null;
    let cipherProblem = null;
    try {
      cipher = cbcCipher(alg, 'The content encryption');
    } catch (err) {
      if (!(err instanceof MediaError) || err.code !== 'unsupported-algorithm') throw err;
      cipherProblem = err;
    }
    if (eci.length !== 3 || !eci[2].is(0, CONTEXT)) {
      throw new MediaError('unsupported-algorithm', 'The encrypted content is detached (not in the file); this is not supported.');
    }
    const ciphertext = octets(eci[2]);
    const recipients = ris.map(parseRecipient);
    return {
      recipients,
      contentTypeOid,
      contentType: CONTENT_TYPES[contentTypeOid] || contentTypeOid,
      cipher,
      cipherProblem,
      ciphertext,
    };
  }, 'The encrypted file');
}

/**
 * Parse a decrypted DigestedData (RFC 5652 7).
 *
 * @param {Uint8Array} plaintext
 * @returns {{ digest: {name, webcrypto}, digestOid: string, content: Uint8Array, expected: Uint8Array }}
 * @throws {MediaError} 'tampered' when it is not a DigestedData (the key opened, so the
 *   ciphertext was altered), 'unsupported-algorithm' for other inner types.
 */
export function parseDigested(plaintext) {
  try {
    const top = parse(plaintext);
    const parts = expectConstructed(top, TAG.SEQUENCE, UNIVERSAL, 'DigestedData');
    if (parts.length !== 4) throw malformed('DigestedData fields');
    smallInt(parts[0]);
    const alg = algorithmIdentifier(parts[1], 'the digest algorithm');
    const eci = expectConstructed(parts[2], TAG.SEQUENCE, UNIVERSAL, 'the encapsulated content');
    const innerType = oid(eci[0]);
    if (innerType !== OID.data) {
      throw new MediaError('unsupported-algorithm',
        `The DigestedData holds ${CONTENT_TYPES[innerType] || innerType}, not a DICOM file; this is not supported.`);
    }
    if (eci.length !== 2) throw malformed('the encapsulated content is missing');
    const wrapped = expectConstructed(eci[1], 0, CONTEXT, 'eContent');
    if (wrapped.length !== 1 || !wrapped[0].is(TAG.OCTET_STRING)) throw malformed('eContent');
    const content = octets(wrapped[0]);
    if (!parts[3].is(TAG.OCTET_STRING)) throw malformed('digest');
    const expected = octets(parts[3]);
    const digest = DIGESTS[alg.oid];
    if (!digest || !digest.webcrypto) {
      throw new MediaError('unsupported-algorithm',
        `The file's digest algorithm ${digest ? digest.name : alg.oid} is not supported (SHA-1/256/384/512 are).`);
    }
    return { digest, digestOid: alg.oid, content, expected };
  } catch (err) {
    if (err instanceof MediaError && err.code === 'unsupported-algorithm') throw err;
    if (err instanceof MediaError || (err && err.name === 'Asn1Error')) {
      throw new MediaError('tampered',
        'The file was altered: its decrypted content is not a valid DigestedData.');
    }
    throw err;
  }
}

/** The kind names of describe(): what a person or the page needs, no key material. */
export function summarizeRecipient(r) {
  if (r.problem) return { kind: r.kind, problem: r.problem.message };
  if (r.kind === 'password') {
    return {
      kind: 'password', prf: r.kdf.prf.name, iterations: r.kdf.iterations,
      saltBytes: r.kdf.salt.length, wrap: r.wrap.name,
    };
  }
  if (r.kind === 'rsa-oaep' || r.kind === 'rsa-pkcs1') {
    const out = { kind: r.kind };
    if (r.rid.serial) out.serial = hex(r.rid.serial);
    if (r.rid.subjectKeyIdentifier) out.subjectKeyIdentifier = hex(r.rid.subjectKeyIdentifier);
    if (r.kind === 'rsa-oaep') {
      out.hash = r.oaep.hash.name;
      out.mgfHash = r.oaep.mgfHash.name;
    }
    return out;
  }
  return { kind: 'other', type: r.type };
}
