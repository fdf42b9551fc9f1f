// The page's disc sources (src/page/source.js): files chosen or dropped, matched to DICOMDIR
// file IDs without case, relative to the folder that holds DICOMDIR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileListSource, entriesFromInput, tryFetchSource } from '../src/page/source.js';

const file = (text) => new Blob([text]);

test('files under the chosen disc folder are found by DICOMDIR file ID, any case', async () => {
  const source = new FileListSource([
    { path: 'CDROM/INDEX.HTM', file: file('page') },
    { path: 'CDROM/DICOMDIR', file: file('dir') },
    { path: 'CDROM/pt000000/st000000/se000000/im000000', file: file('image') },
  ]);
  assert.equal(source.found, true);
  assert.equal(new TextDecoder().decode(await source.read('DICOMDIR')), 'dir');
  assert.equal(new TextDecoder().decode(await source.read('PT000000/ST000000/SE000000/IM000000')), 'image');
  await assert.rejects(source.read('PT000000/ST000000/SE000000/IM000001'), /IM000001 is missing from the chosen folder/);
});

test('the DICOMDIR nearest the top wins; a folder without one is reported', async () => {
  const nested = new FileListSource([
    { path: 'USB/DICOMDIR', file: file('top') },
    { path: 'USB/OLD/DICOMDIR', file: file('old') },
  ]);
  assert.equal(new TextDecoder().decode(await nested.read('DICOMDIR')), 'top');
  assert.equal(new FileListSource([{ path: 'X/README.TXT', file: file('r') }]).found, false);
});

test('ISO 9660 names with a trailing dot or version (IM000000.;1) match their file ID', async () => {
  const source = new FileListSource([
    { path: 'D/DICOMDIR.', file: file('dir') },
    { path: 'D/PT0/IM000000.;1', file: file('im') },
  ]);
  assert.equal(source.found, true);
  assert.equal(new TextDecoder().decode(await source.read('PT0/IM000000')), 'im');
  const entries = entriesFromInput([Object.assign(file('x'), { webkitRelativePath: 'DISC/DICOMDIR' })]);
  assert.deepEqual(entries.map((e) => e.path), ['DISC/DICOMDIR']);
});

test('a disc whose names show in lower case (ISO 9660 on Linux) is read by fetch', async () => {
  // FetchSource as Firefox uses it, over a fetch that knows only lower-case names
  const saved = globalThis.fetch;
  const files = new Map([['file:///cdrom/dicomdir', 'dir'], ['file:///cdrom/pt000000/im000000', 'image']]);
  const asked = [];
  globalThis.fetch = async (url) => {
    asked.push(String(url));
    const body = files.get(String(url));
    return body === undefined ? new Response(null, { status: 404 }) : new Response(body);
  };
  try {
    const found = await tryFetchSource(new URL('file:///cdrom/'));
    assert.ok(found, 'the lower-case DICOMDIR is found');
    assert.equal(new TextDecoder().decode(found.dicomdir), 'dir');
    assert.equal(new TextDecoder().decode(await found.source.read('PT000000/IM000000')), 'image');
    assert.deepEqual(asked.slice(0, 2), ['file:///cdrom/DICOMDIR', 'file:///cdrom/dicomdir']);
    globalThis.fetch = async () => new Response(null, { status: 404 });
    assert.equal(await tryFetchSource(new URL('file:///empty/')), null);
  } finally {
    globalThis.fetch = saved;
  }
});
