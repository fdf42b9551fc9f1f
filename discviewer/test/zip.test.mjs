// ZipWriter read back by Python's zipfile (and unzip -t when installed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { ZipWriter, crc32 } from '../src/zip.js';
import { PY, join, tempDir, writeFileSync } from '../testkit/fixtures.mjs';

const CHECK = `
import sys, zipfile, json, hashlib
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    infos = z.infolist()
    print(json.dumps({"bad": bad, "n": len(infos), "first": [i.filename for i in infos[:3]],
        "sha": {i.filename: hashlib.sha256(z.read(i)).hexdigest() for i in infos[:5]},
        "stored": all(i.compress_type == 0 for i in infos)}))
`;

async function save(zip, path) {
  writeFileSync(path, new Uint8Array(await (await zip.blob()).arrayBuffer()));
}

test('crc32 of a known string', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
});

test('a folder of files, UTF-8 names, read back by zipfile and unzip -t', async (t) => {
  const d = tempDir(t);
  const zip = new ZipWriter({ date: new Date(2026, 11, 3, 9, 0, 0) });
  const files = {
    'DICOM/PAT1/IM00001.dcm': new Uint8Array(300000).map((_, i) => (i * 7) & 0xff),
    'DICOM/PAT1/IM00002.dcm': new Uint8Array(0),
    'Müller/readme.txt': new TextEncoder().encode('hello\n'),
  };
  for (const [name, b] of Object.entries(files)) zip.add(name, b);
  assert.throws(() => zip.add('../evil', new Uint8Array(1)), TypeError);
  assert.throws(() => zip.add('DICOM/PAT1/IM00002.dcm', new Uint8Array(1)), TypeError);
  const path = join(d, 'a.zip');
  await save(zip, path);
  const out = JSON.parse(execFileSync(PY, ['-c', CHECK, path]).toString());
  assert.equal(out.bad, null);
  assert.equal(out.n, 3);
  assert.ok(out.stored);
  assert.deepEqual(out.first, Object.keys(files));
  const { createHash } = await import('node:crypto');
  for (const [name, b] of Object.entries(files)) {
    assert.equal(out.sha[name], createHash('sha256').update(b).digest('hex'));
  }
  try {
    execFileSync('unzip', ['-tq', path]);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
});

test('more than 65,535 entries: ZIP64 end records, zipfile reads every entry', async (t) => {
  const d = tempDir(t);
  const zip = new ZipWriter();
  const n = 70000;
  for (let i = 0; i < n; i++) zip.add(`F/${i}`, new Uint8Array([i & 0xff, (i >> 8) & 0xff]));
  const path = join(d, 'big.zip');
  await save(zip, path);
  const out = JSON.parse(execFileSync(PY, ['-c', CHECK, path], { maxBuffer: 1 << 24 }).toString());
  assert.equal(out.bad, null);
  assert.equal(out.n, n);
  execFileSync('unzip', ['-tq', path]); // Info-ZIP reads the ZIP64 end records too
});
