import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPart10, parsePart10 } from '../src/dicom.js';
import { readDicomdir } from '../src/dicomdir.js';
import { HAVE_PYTHON, testFile, testFilesDir, python } from '../tools/helpers.mjs';

const opts = { skip: !HAVE_PYTHON && 'needs the worktree .venv (pydicom test files)' };

function shape(tree) {
  return tree.patients.map((p) => [p.id, p.studies.map((s) => [s.uid, s.series.map((se) => [se.uid, se.images.map((i) => i.fileId).sort()])])]);
}

test('pydicom DICOMDIR: same tree as pydicom reads, in every encoding and record order', opts, async () => {
  const want = JSON.parse(python(`
import json, os, pydicom
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet
fs = FileSet(pydicom.dcmread(get_testdata_file('DICOMDIR')))
tree = {}
for i in fs:
    tree.setdefault(i.PatientID, {}).setdefault(i.StudyInstanceUID, {}).setdefault(i.SeriesInstanceUID, []).append(os.path.relpath(i.path, fs.path).replace(os.sep, '/'))
out = [[p, [[s, [[se, sorted(f)] for se, f in series.items()]] for s, series in studies.items()]] for p, studies in tree.items()]
print(json.dumps(out))`));
  const norm = (t) => JSON.stringify(t.map(([p, st]) => [p, st.map(([s, se]) => [s, se.sort()]).sort()]).sort());
  for (const name of ['DICOMDIR', 'DICOMDIR-implicit', 'DICOMDIR-bigEnd', 'DICOMDIR-reordered']) {
    const tree = readDicomdir(await loadPart10(testFile(`dicomdirtests/${name}`)));
    assert.equal(norm(shape(tree)), norm(want), name);
  }
  const tree = readDicomdir(parsePart10(testFile('dicomdirtests/DICOMDIR')));
  const p = tree.patients.find((x) => x.id === '77654033');
  assert.equal(p.name, 'Doe^Archibald');
  const st = p.studies.find((s) => s.description === 'XR C Spine Comp Min 4 Views');
  assert.deepEqual(st.modalities, ['CR']);
  assert.equal(st.date, '20010101');
  assert.deepEqual(st.series.map((s) => s.number), [1, 2, 3]);
  assert.equal(st.series[0].images[0].fileId, '77654033/CR1/6154');
  assert.match(st.series[0].images[0].sopInstanceUid, /^1\.3\.6\.1\.4\.1\.5962\./);
});

function u32(bytes, at) {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(at, true);
}
function setU32(bytes, at, v) {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, v, true);
}

test('loops and bad offsets end, with every record still read once', opts, () => {
  const bytes = testFile('dicomdirtests/DICOMDIR').slice();
  const f = parsePart10(bytes);
  const good = shape(readDicomdir(f));
  const root = f.number('00041200');
  // Point every "next record" offset of the last patient back to the first record (a loop),
  // and every lower-level offset of the last series to itself.
  const items = f.dataSet.elements.x00041220.items;
  for (const it of items) {
    const next = it.dataSet.elements.x00041400;
    if (next && u32(bytes, next.dataOffset) === 0) setU32(bytes, next.dataOffset, root);
  }
  const looped = readDicomdir(parsePart10(bytes));
  assert.deepEqual(shape(looped), good);
  // Offsets that point nowhere: the reader falls back to the order of the items.
  const bad = testFile('dicomdirtests/DICOMDIR').slice();
  const f2 = parsePart10(bad);
  setU32(bad, f2.dataSet.elements.x00041200.dataOffset, 7);
  const fallback = readDicomdir(parsePart10(bad));
  const count = (t) => t.patients.flatMap((p) => p.studies.flatMap((s) => s.series.flatMap((se) => se.images))).length;
  assert.equal(count(fallback), count(readDicomdir(f2)));
  assert.ok(count(fallback) > 10);
});

test('a DICOMDIR made by DCMTK dcmmkdir: Referenced File IDs with folders', { skip: (!HAVE_PYTHON || spawnSync('dcmmkdir', ['--version']).error) && 'needs dcmmkdir' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dvdir-'));
  try {
    mkdirSync(join(dir, 'DIR1', 'SUB'), { recursive: true });
    copyFileSync(`${testFilesDir()}/CT_small.dcm`, join(dir, 'DIR1', 'SUB', 'CT1'));
    copyFileSync(`${testFilesDir()}/MR_small.dcm`, join(dir, 'DIR1', 'MR1'));
    const r = spawnSync('dcmmkdir', ['+r', '-Pgp', '+I', '+id', dir, '+D', join(dir, 'DICOMDIR'), 'DIR1/SUB/CT1', 'DIR1/MR1'], { cwd: dir, encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, r.stderr);
    const tree = readDicomdir(parsePart10(new Uint8Array(readFileSync(join(dir, 'DICOMDIR')))));
    const images = tree.patients.flatMap((p) => p.studies.flatMap((s) => s.series.flatMap((se) => se.images.map((i) => [se.modality, i.fileId]))));
    assert.deepEqual(images.sort(), [['CT', 'DIR1/SUB/CT1'], ['MR', 'DIR1/MR1']]);
    const ct = parsePart10(testFile('CT_small.dcm'));
    const pat = tree.patients.find((p) => p.id === ct.string('00100020'));
    assert.equal(pat.name, ct.string('00100010'));
    assert.equal(pat.studies[0].uid, ct.string('0020000d'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
