// openSecureFile / describe / PrivateKey against files made at test time by the Python
// package (securepacs media create) and by openssl cms.
import { test, before, after } from 'node:test';
import { rmSync } from 'node:fs';
import assert from 'node:assert/strict';
import { parse } from '../src/asn1.js';
import {
  MediaError, PasswordKey, PrivateKey, KeyCache, describe, openSecureFile,
} from '../src/secure.js';
import {
  PASSWORD, OPENSSL_PASSWORD, SECUREPACS, bytes, join, python, rsaPair, run, tempDir, testdata,
  walk, writeFileSync, readFileSync,
} from '../testkit/fixtures.mjs';

let mixedDisc; let dir; let disc; let plainDir; let ct; let pair; let oaepDisc; let pkcs1Disc;

async function rejects(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof MediaError, `MediaError expected, got ${err && err.stack}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

function discFiles(d) {
  return walk(d).filter((p) => !/README|INDEX|VIEWER/i.test(p));
}

after(() => rmSync(dir, { recursive: true, force: true }));

before(() => {
  dir = tempDir(null);
  ct = testdata('CT_small.dcm');
  const src = join(dir, 'src');
  run('mkdir', ['-p', src]);
  run('cp', [ct, testdata('MR_small.dcm'), src]);
  writeFileSync(join(dir, 'pw.txt'), `${PASSWORD}\n`);
  disc = join(dir, 'disc');
  run(SECUREPACS, ['media', 'create', src, '--out', disc, '--password-file', join(dir, 'pw.txt')]);
  plainDir = join(dir, 'plain');
  run(SECUREPACS, ['media', 'extract', disc, '--to', plainDir, '--password-file', join(dir, 'pw.txt')]);
  pair = rsaPair(dir);
  oaepDisc = join(dir, 'oaep');
  run(SECUREPACS, ['media', 'create', src, '--out', oaepDisc, '--recipient', pair.cert, '--oaep']);
  mixedDisc = join(dir, 'mixed');
  run(SECUREPACS, ['media', 'create', src, '--out', mixedDisc, '--password-file', join(dir, 'pw.txt'),
    '--recipient', pair.cert, '--oaep']);
  pkcs1Disc = join(dir, 'pkcs1');
  // RSA-OAEP is media create's default for certificates; --pkcs1 asks for PKCS#1 v1.5
  run(SECUREPACS, ['media', 'create', src, '--out', pkcs1Disc, '--recipient', pair.cert, '--pkcs1']);
});

test('a securepacs disc opens with its password, one PBKDF2 run for the whole disc', async () => {
  const cache = new KeyCache();
  const key = new PasswordKey(PASSWORD);
  const files = discFiles(disc);
  assert.ok(files.length >= 3, files.join());
  const plain = walk(plainDir);
  for (const f of files) {
    const d = describe(bytes(f));
    assert.equal(d.recipients[0].kind, 'password');
    assert.equal(d.recipients[0].prf, 'sha256');
    assert.equal(d.recipients[0].iterations, 600000);
    assert.equal(d.content.algorithm, 'aes-256-cbc');
    const out = await openSecureFile(bytes(f), [key], cache, { requireDigest: true });
    assert.equal(out.integrity, 'verified');
    assert.equal(out.digest, 'sha256');
    const rel = f.slice(disc.length);
    const expected = plain.find((p) => p.slice(plainDir.length) === rel);
    assert.ok(expected, `media extract wrote ${rel}`);
    assert.deepEqual(out.part10, bytes(expected));
  }
  assert.equal(cache.derivations, 1);
});

test('wrong password, tampered byte, truncated file', async () => {
  const f = discFiles(disc).find((p) => !p.endsWith('DICOMDIR'));
  const data = bytes(f);
  await rejects(openSecureFile(data, [new PasswordKey('not the password')], new KeyCache()), 'wrong-key');
  const cache = new KeyCache();
  const key = new PasswordKey(PASSWORD);
  for (const at of [Math.floor(data.length / 2), data.length - 40, data.length - 1]) {
    const bad = data.slice();
    bad[at] ^= 0x01;
    await rejects(openSecureFile(bad, [key], cache), 'tampered');
  }
  await rejects(openSecureFile(data.slice(0, data.length - 100), [key], cache), 'truncated');
  await rejects(openSecureFile(data.slice(0, 30), [key], cache), 'truncated');
  assert.equal(cache.derivations, 1);
});

test('content type switched from DigestedData to data: unprotected, refused', async () => {
  const f = discFiles(disc).find((p) => !p.endsWith('DICOMDIR'));
  const data = bytes(f);
  // the EncryptedContentInfo's content type: 06 09 2a 86 48 86 f7 0d 01 07 05 -> ... 07 01
  const needle = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x05];
  let at = -1;
  for (let i = 0; i < 4096 && at < 0; i++) if (needle.every((b, j) => data[i + j] === b)) at = i;
  assert.ok(at > 0);
  const bad = data.slice();
  bad[at + 10] = 0x01;
  assert.equal(describe(bad).content.type, 'data');
  await rejects(openSecureFile(bad, [new PasswordKey(PASSWORD)], new KeyCache(), { requireDigest: true }), 'unprotected');
  await rejects(openSecureFile(bad, [new PasswordKey(PASSWORD)], new KeyCache()), 'unprotected');
});

for (const variant of [['-aes-256-cbc'], ['-aes-128-cbc', '-stream'], ['-aes-192-cbc']]) {
  test(`openssl cms ${variant.join(' ')} with a password (SHA-1, 2048 iterations): unprotected id-data`, async (t) => {
    const d = tempDir(t);
    const out = join(d, 'f.p7m');
    run('openssl', ['cms', '-encrypt', '-binary', ...variant, '-pwri_password', OPENSSL_PASSWORD,
      '-in', ct, '-outform', 'DER', '-out', out]);
    const data = bytes(out);
    const desc = describe(data);
    assert.equal(desc.recipients[0].prf, 'sha1');
    assert.equal(desc.recipients[0].iterations, 2048);
    assert.equal(desc.content.algorithm, variant[0].slice(1));
    const opened = await openSecureFile(data, [new PasswordKey(OPENSSL_PASSWORD)], new KeyCache());
    assert.equal(opened.integrity, 'unprotected');
    assert.deepEqual(opened.part10, bytes(ct));
    await rejects(openSecureFile(data, [new PasswordKey(OPENSSL_PASSWORD)], new KeyCache(), { requireDigest: true }), 'unprotected');
    await rejects(openSecureFile(data, [new PasswordKey('pass with spaces/and backslash')], new KeyCache()), 'wrong-key');
  });
}

test('openssl cms RSA-OAEP (SHA-1 and SHA-256) opens with PEM PKCS#8, encrypted PKCS#8, PKCS#1', async (t) => {
  const d = tempDir(t);
  run('openssl', ['pkcs8', '-topk8', '-v2', 'aes-256-cbc', '-in', pair.key, '-out', join(d, 'enc.pem'), '-passout', 'pass:key secret']);
  run('openssl', ['rsa', '-traditional', '-in', pair.key, '-out', join(d, 'pkcs1.pem')]);
  const keys = [
    await PrivateKey.fromFile(bytes(pair.key)),
    await PrivateKey.fromFile(bytes(join(d, 'enc.pem')), 'key secret'),
    await PrivateKey.fromFile(bytes(join(d, 'pkcs1.pem'))),
  ];
  await rejects(PrivateKey.fromFile(bytes(join(d, 'enc.pem')), 'wrong'), 'wrong-key');
  await rejects(PrivateKey.fromFile(bytes(join(d, 'enc.pem'))), 'wrong-key');
  for (const md of ['sha1', 'sha256']) {
    const out = join(d, `${md}.p7m`);
    run('openssl', ['cms', '-encrypt', '-binary', '-aes-256-cbc', '-in', ct, '-outform', 'DER', '-out', out,
      '-recip', pair.cert, '-keyopt', 'rsa_padding_mode:oaep', '-keyopt', `rsa_oaep_md:${md}`]);
    const data = bytes(out);
    const r = describe(data).recipients[0];
    assert.equal(r.kind, 'rsa-oaep');
    assert.equal(r.hash, md);
    for (const key of keys) {
      const opened = await openSecureFile(data, [key], new KeyCache());
      assert.deepEqual(opened.part10, bytes(ct));
    }
  }
  const other = rsaPair(d, 'other');
  const stranger = await PrivateKey.fromFile(bytes(other.key));
  await rejects(openSecureFile(bytes(join(d, 'sha256.p7m')), [stranger], new KeyCache()), 'wrong-key');
});

test('securepacs --oaep disc opens with the key, also from the PKCS#12 the Python writes', async (t) => {
  const d = tempDir(t);
  const p12 = join(d, 'k.p12');
  const legacy = join(d, 'legacy.p12');
  python(`
import sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from securepacs.pki.bundles import pkcs12
key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)
cert = x509.load_pem_x509_certificate(open(sys.argv[2], 'rb').read())
open(sys.argv[3], 'wb').write(pkcs12('holder', key, cert, [], b'p12 secret'))
open(sys.argv[4], 'wb').write(pkcs12('holder', key, cert, [], b'p12 secret', legacy=True))
`, [pair.key, pair.cert, p12, legacy]);
  const fromP12 = await PrivateKey.fromFile(bytes(p12), 'p12 secret');
  await rejects(PrivateKey.fromFile(bytes(p12), 'wrong'), 'wrong-key');
  await rejects(PrivateKey.fromFile(bytes(legacy), 'p12 secret'), 'unsupported-algorithm');
  writeFileSync(join(d, 'combined.pem'), Buffer.concat([readFileSync(pair.key), readFileSync(pair.cert)]));
  const combined = await PrivateKey.fromFile(bytes(join(d, 'combined.pem')));
  assert.equal(combined.certificates.length, 1);
  for (const f of discFiles(oaepDisc)) {
    const r = describe(bytes(f)).recipients[0];
    assert.equal(r.kind, 'rsa-oaep');
    assert.equal(r.hash, 'sha256');
    for (const key of [fromP12, combined]) {
      const out = await openSecureFile(bytes(f), [key], new KeyCache(), { requireDigest: true });
      assert.equal(out.integrity, 'verified');
    }
  }
  // rsaEncryption (PKCS#1 v1.5) recipients cannot be opened by WebCrypto: said so
  const f = discFiles(pkcs1Disc)[0];
  assert.equal(describe(bytes(f)).recipients[0].kind, 'rsa-pkcs1');
  await rejects(openSecureFile(bytes(f), [combined], new KeyCache()), 'unsupported-recipient');
});

test('Triple-DES content is recognised and refused as unsupported', async (t) => {
  const d = tempDir(t);
  const out = join(d, 'des.p7m');
  run('openssl', ['cms', '-encrypt', '-binary', '-des3', '-pwri_password', OPENSSL_PASSWORD,
    '-in', ct, '-outform', 'DER', '-out', out]);
  assert.equal(describe(bytes(out)).content.algorithm, 'des-ede3-cbc');
  await rejects(openSecureFile(bytes(out), [new PasswordKey(OPENSSL_PASSWORD)], new KeyCache()), 'unsupported-algorithm');
});

test('a hostile PBKDF2 iteration count is refused at once', async (t) => {
  const d = tempDir(t);
  const out = join(d, 'hostile.dcm');
  python(`
import sys
from securepacs.media import cms
from securepacs.media.pwri import KdfParams
from securepacs.media.recipients import PasswordRecipient
kdf = KdfParams(b'0123456789abcdef', 600_000, 'sha256')
object.__setattr__(kdf, 'iterations', 15_000_000)  # past the Python reader's own limit
r = PasswordRecipient(kdf, bytes(32))
open(sys.argv[1], 'wb').write(cms.seal(open(sys.argv[2], 'rb').read(), [r]))
`, [out, ct]);
  const started = Date.now();
  await assert.rejects(openSecureFile(bytes(out), [new PasswordKey(PASSWORD)], new KeyCache()),
    (err) => err.code === 'unsupported-algorithm' && /15,000,000 PBKDF2 iterations/.test(err.message));
  assert.ok(Date.now() - started < 2000);
});

test('passwords outside printable US-ASCII are refused', () => {
  assert.throws(() => new PasswordKey('pässword'), (e) => e.code === 'wrong-key' && /position 2/.test(e.message));
  assert.throws(() => new PasswordKey(''), MediaError);
  assert.equal(JSON.stringify(new PasswordKey('secret words here')), '{"kind":"password"}');
});

test('mutated files never hang or throw anything but MediaError', async () => {
  const f = discFiles(disc).find((p) => !p.endsWith('DICOMDIR'));
  const data = bytes(f).slice(0, 1200); // structure + a little content
  const full = bytes(f);
  const key = new PasswordKey(PASSWORD);
  const cache = new KeyCache();
  let seed = 12345;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let i = 0; i < 400; i++) {
    const bad = (i % 2 ? full : data).slice(0, i % 2 ? full.length : data.length);
    for (let k = 0, n = 1 + rnd(4); k < n; k++) bad[rnd(Math.min(bad.length, 600))] = rnd(256);
    try {
      await openSecureFile(bad, [key], cache);
    } catch (err) {
      assert.ok(err instanceof MediaError, `iteration ${i}: ${err && err.stack}`);
    }
  }
  // a deep nest of indefinite lengths and a huge declared length
  const deep = new Uint8Array(4000);
  for (let i = 0; i < 2000; i++) { deep[2 * i] = 0x30; deep[2 * i + 1] = 0x80; }
  assert.throws(() => describe(deep), MediaError);
  assert.throws(() => describe(new Uint8Array([0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x06])), (e) => e.code === 'truncated');
});

test('files opened at once still cost one PBKDF2 run', async () => {
  const cache = new KeyCache();
  const key = new PasswordKey(PASSWORD);
  const out = await Promise.all(discFiles(disc).map((f) => openSecureFile(bytes(f), [key], cache)));
  assert.ok(out.every((o) => o.integrity === 'verified'));
  assert.equal(cache.derivations, 1);
});

test('a damaged certificate recipient is named; the password recipient still opens', async () => {
  const f = discFiles(mixedDisc).find((p) => !p.endsWith('DICOMDIR'));
  const data = bytes(f);
  const kinds = describe(data).recipients.map((r) => r.kind).sort();
  assert.deepEqual(kinds, ['password', 'rsa-oaep']);
  // find the KeyTransRecipientInfo and turn its rid SEQUENCE into a SET
  const ed = parse(data).children()[1].children()[0].children();
  const ktri = ed.find((e) => e.is(17)).children().find((e) => e.is(16));
  const bad = data.slice();
  bad[ktri.children()[1].start] = 0x31;
  const desc = describe(bad).recipients.find((r) => r.problem);
  assert.match(desc.problem, /damaged/);
  const out = await openSecureFile(bad, [new PasswordKey(PASSWORD)], new KeyCache(), { requireDigest: true });
  assert.equal(out.integrity, 'verified');
  const key = await PrivateKey.fromFile(bytes(pair.key));
  await rejects(openSecureFile(bad, [key], new KeyCache()), 'malformed');
  assert.equal((await openSecureFile(data, [key], new KeyCache())).integrity, 'verified');
});
