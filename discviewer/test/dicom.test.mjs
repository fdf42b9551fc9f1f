import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DicomError, loadPart10, parsePart10, inflatePart10, lookupTag } from '../src/dicom.js';
import { HAVE_PYTHON, testFile, python } from '../tools/helpers.mjs';

const opts = { skip: !HAVE_PYTHON && 'needs the worktree .venv (pydicom test files)' };

test('explicit VR little endian: strings, numbers, multi-valued, sequences', opts, () => {
  const f = parsePart10(testFile('CT_small.dcm'));
  assert.equal(f.transferSyntax, '1.2.840.10008.1.2.1');
  assert.equal(f.string('00100010'), 'CompressedSamples^CT1');
  assert.equal(f.string('x00100010'), 'CompressedSamples^CT1');
  assert.equal(f.number('00280010'), 128);
  assert.equal(f.number('00280030', 1), 0.661468);
  assert.equal(f.string('00280030'), '0.661468\\0.661468');
  assert.equal(f.frames, 1);
  assert.equal(f.pixelDataElement.length, 128 * 128 * 2);
  assert.equal(f.number('00281052'), -1024);
  assert.equal(f.string('99990010'), '');
  assert.equal(f.number('99990010'), undefined);
});

test('implicit VR and big endian read the same values as explicit VR little endian', opts, () => {
  const ref = parsePart10(testFile('MR_small.dcm'));
  for (const name of ['MR_small_implicit.dcm', 'MR_small_bigendian.dcm']) {
    const f = parsePart10(testFile(name));
    for (const tag of ['00100010', '00280010', '00280011', '00280100', '00180050', '00200013']) {
      assert.deepEqual([name, tag, f.string(tag)], [name, tag, ref.string(tag)]);
    }
    assert.equal(f.number('00280010'), 64);
  }
});

test('deflated: loadPart10 inflates with DecompressionStream; parsePart10 alone says so', opts, async () => {
  const bytes = testFile('image_dfl.dcm');
  assert.throws(() => parsePart10(bytes), (e) => e instanceof DicomError && /deflated/.test(e.message));
  const f = await loadPart10(bytes);
  assert.equal(f.transferSyntax, '1.2.840.10008.1.2.1.99');
  assert.equal(f.number('00280010'), 512);
  assert.equal(f.pixelDataElement.length, 512 * 512);
  assert.equal(parsePart10(await inflatePart10(bytes)).number('00280011'), 512);
  // a file that is not deflated comes back unchanged
  const ct = testFile('CT_small.dcm');
  assert.equal(await inflatePart10(ct), ct);
});

test('a damaged deflate stream is one clear error', opts, async () => {
  const bytes = testFile('image_dfl.dcm').slice();
  bytes.fill(0xff, bytes.length - 4000); // corrupt the tail of the deflate stream
  await assert.rejects(loadPart10(bytes), (e) => e instanceof DicomError);
});

test('not DICOM and truncated files are DicomErrors with one plain sentence', opts, () => {
  assert.throws(() => parsePart10(new Uint8Array(10)), DicomError);
  assert.throws(() => parsePart10(new TextEncoder().encode('x'.repeat(300))), /not a DICOM file/);
  const ct = testFile('CT_small.dcm');
  assert.throws(() => parsePart10(ct.subarray(0, 600)), DicomError);
});

test('tag dump: every element named as pydicom names it, sequences nested', opts, () => {
  const f = parsePart10(testFile('CT_small.dcm'));
  const rows = f.tags();
  const want = JSON.parse(python(`
import json, pydicom
from pydicom.data import get_testdata_file
ds = pydicom.dcmread(get_testdata_file('CT_small.dcm'))
out = []
def walk(d, depth):
    for el in d:
        out.append([f"{el.tag:08x}", el.keyword, depth])
        if el.VR == 'SQ':
            for item in el.value:
                walk(item, depth + 2)
walk(ds.file_meta, 0); walk(ds, 0)
print(json.dumps(out))`));
  const got = rows.filter((r) => r.tag !== 'fffee000').map((r) => [r.tag, r.name, r.depth]);
  // private tags have no keyword in pydicom; ours say PrivateCreator or ''
  const strip = (l) => l.map(([t, n, d]) => [t, parseInt(t.slice(0, 4), 16) % 2 ? '' : n, d]);
  assert.deepEqual(strip(got), strip(want));
  const pn = rows.find((r) => r.tag === '00100010');
  assert.deepEqual([pn.vr, pn.name, pn.value], ['PN', 'PatientName', 'CompressedSamples^CT1']);
  const px = rows.find((r) => r.tag === '7fe00010');
  assert.match(px.value, /32768 bytes/);
});

test('dictionary lookups: repeating groups, group length, private creator', () => {
  assert.deepEqual(lookupTag('00100010'), { vr: 'PN', name: 'PatientName' });
  assert.equal(lookupTag('60023000').name, 'OverlayData');
  assert.equal(lookupTag('00090010').name, 'PrivateCreator');
  assert.equal(lookupTag('00180000').name, 'GroupLength');
});

test('multi-frame encapsulated: frame count and one frame per fragment set', opts, () => {
  const f = parsePart10(testFile('examples_ybr_color.dcm'));
  assert.equal(f.frames, 30);
  const a = f.encapsulatedFrame(0);
  const b = f.encapsulatedFrame(29);
  assert.equal(a[0], 0xff);
  assert.equal(a[1], 0xd8);
  assert.equal(b[0], 0xff);
  assert.equal(b[1], 0xd8);
  assert.throws(() => f.encapsulatedFrame(30), DicomError);
});
