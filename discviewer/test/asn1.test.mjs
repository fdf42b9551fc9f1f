// The BER reader on hostile input: bounds, nesting, indefinite lengths, constructed strings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Asn1Error, octets, oid, parse, der, derOid, smallInt } from '../src/asn1.js';

const B = (...a) => new Uint8Array(a);
const code = (fn) => {
  try { fn(); } catch (err) { assert.ok(err instanceof Asn1Error, err.stack); return err.code; }
  return 'ok';
};

test('definite and indefinite lengths, constructed OCTET STRING joined', () => {
  // 24 80 (04 02 aa bb) (24 80 (04 01 cc) 00 00) 00 00
  const el = parse(B(0x24, 0x80, 0x04, 0x02, 0xaa, 0xbb, 0x24, 0x80, 0x04, 0x01, 0xcc, 0, 0, 0, 0));
  assert.equal(el.indefinite, true);
  assert.deepEqual(octets(el), B(0xaa, 0xbb, 0xcc));
  assert.equal(oid(parse(derOid('1.2.840.113549.1.9.16.3.9'))), '1.2.840.113549.1.9.16.3.9');
  assert.equal(oid(parse(derOid('2.16.840.1.101.3.4.1.42'))), '2.16.840.1.101.3.4.1.42');
  assert.equal(smallInt(parse(der(0x02, B(0x09, 0x27, 0xc0)))), 600000);
});

test('hostile encodings are refused with a code, quickly', () => {
  assert.equal(code(() => parse(B(0x30, 0x84, 0xff, 0xff, 0xff, 0xf0, 0x00))), 'truncated');
  assert.equal(code(() => parse(B(0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9))), 'malformed');
  assert.equal(code(() => parse(B(0x30, 0x03, 0x04, 0x05, 0x00, 0, 0, 0, 0, 0, 0)).children()), 'malformed'); // child longer than parent
  assert.equal(code(() => parse(B(0x04, 0x80, 0x00, 0x00))), 'malformed'); // indefinite primitive
  assert.equal(code(() => parse(B(0x30, 0x80, 0x04, 0x00))), 'truncated'); // no end-of-contents
  assert.equal(code(() => parse(B(0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00))), 'malformed'); // huge tag
  assert.equal(code(() => parse(B(0x30, 0x00, 0x01))), 'malformed'); // trailing data
  assert.equal(code(() => oid(parse(B(0x06, 0x02, 0x80, 0x01)))), 'malformed');
  const deep = new Uint8Array(20000);
  for (let i = 0; i < 10000; i++) { deep[2 * i] = 0x30; deep[2 * i + 1] = 0x80; }
  assert.equal(code(() => parse(deep)), 'malformed');
  // a million empty segments: joined without a list of segments, and children() refuses to list them
  const many = new Uint8Array(2 + 2 * 1_000_000 + 2);
  many[0] = 0x24; many[1] = 0x80;
  for (let i = 0; i < 1_000_000; i++) { many[2 + 2 * i] = 0x04; many[3 + 2 * i] = 0; }
  const el = parse(many);
  assert.equal(octets(el).length, 0);
  assert.equal(code(() => el.children()), 'malformed');
});
