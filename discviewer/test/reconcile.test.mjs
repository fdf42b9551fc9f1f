// reconcilePart10 edge cases (the comparison with Python is tests/integration/test_discviewer_reconcile.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { reconcilePart10, ReconcileError } from '../src/reconcile.js';
import { bytes, testdata } from '../testkit/fixtures.mjs';

const now = new Date('2026-12-03T09:00:00Z');

test('same identity: the file comes back unchanged', async () => {
  const ct = bytes(testdata('CT_small.dcm'));
  const out = await reconcilePart10(ct, { patientId: '1CT1', issuer: '' }, { now });
  // the issuer is absent and the new one empty: Python counts that as a change too
  assert.notEqual(out, ct);
  const same = await reconcilePart10(ct, { patientName: 'CompressedSamples^CT1' }, { now });
  assert.equal(same, ct);
});

test('a file of another patient and bad targets are refused', async () => {
  const ct = bytes(testdata('CT_small.dcm'));
  await assert.rejects(reconcilePart10(ct, { patientId: 'X' }, { now, mediaPatientId: 'OTHER' }), ReconcileError);
  await assert.rejects(reconcilePart10(ct, { patientId: 'a\\b' }, { now }), ReconcileError);
  await assert.rejects(reconcilePart10(ct, { issuer: 'H' }, { now }), ReconcileError);
  await assert.rejects(reconcilePart10(ct, { patientId: 'X', birthDate: '1970' }, { now }), ReconcileError);
  await assert.rejects(reconcilePart10(ct, { patientId: 'X' }, {}), TypeError);
});

test('truncated and mutated files raise ReconcileError, never hang', async () => {
  const ct = bytes(testdata('CT_small.dcm'));
  for (const n of [100, 200, 1000, 2000]) { // each cuts inside an element
    await assert.rejects(reconcilePart10(ct.slice(0, n), { patientId: 'X' }, { now }), ReconcileError);
  }
  let seed = 7;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  for (let i = 0; i < 300; i++) {
    const bad = ct.slice();
    for (let k = 0; k < 3; k++) bad[132 + rnd(1500)] = rnd(256);
    try {
      await reconcilePart10(bad, { patientId: 'X' }, { now });
    } catch (err) {
      assert.ok(err instanceof ReconcileError, err.stack);
    }
  }
});
