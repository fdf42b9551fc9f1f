// stow() against a small HTTP server on 127.0.0.1 (a free port) that checks the multipart
// body part by part and answers as PS3.18 10.5.3 says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { stow } from '../src/stow.js';
import { bytes, python, testdata } from '../testkit/fixtures.mjs';

const NAMES = ['CT_small.dcm', 'MR_small.dcm', 'rtplan.dcm', 'JPEG2000.dcm'];

function files() {
  const paths = NAMES.map(testdata);
  const uids = JSON.parse(python(`
import sys, json
from pydicom import dcmread
print(json.dumps([str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sys.argv[1:]]))`, paths));
  return paths.map((p, i) => ({ bytes: bytes(p), uid: uids[i] }));
}

function splitMultipart(body, boundary) {
  const text = body.toString('latin1');
  const pieces = text.split(`--${boundary}`);
  assert.equal(pieces.at(-1), '--\r\n', 'closing delimiter');
  return pieces.slice(1, -1).map((p) => {
    const [head, ...rest] = p.split('\r\n\r\n');
    assert.match(head, /^\r\nContent-Type: application\/dicom$/);
    const payload = rest.join('\r\n\r\n');
    assert.ok(payload.endsWith('\r\n'));
    return Buffer.from(payload.slice(0, -2), 'latin1');
  });
}

async function withServer(handler, fn) {
  const server = createServer(handler);
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  try {
    return await fn(`http://127.0.0.1:${server.address().port}/dicom-web/`);
  } finally {
    server.closeAllConnections();
    await new Promise((ok) => server.close(ok));
  }
}

const item = (uid, extra = {}) => ({ '00081150': { vr: 'UI', Value: ['1.2'] }, '00081155': { vr: 'UI', Value: [uid] }, ...extra });

test('batches, a PS3.18 response, already present and failed, progress', async () => {
  const input = files();
  const requests = [];
  const byBytes = (b) => input.find((f) => Buffer.compare(Buffer.from(f.bytes), b) === 0);
  const result = await withServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/dicom-web/studies');
      assert.equal(req.headers.accept, 'application/dicom+json');
      assert.equal(req.headers.authorization, 'Bearer tok-123');
      const m = /^multipart\/related; type="application\/dicom"; boundary=(\S+)$/.exec(req.headers['content-type']);
      assert.ok(m, req.headers['content-type']);
      const parts = splitMultipart(Buffer.concat(chunks), m[1]);
      const got = parts.map((p) => byBytes(p));
      assert.ok(got.every(Boolean), 'every part is one of the files, byte for byte');
      requests.push(got.map((f) => f.uid));
      const ref = [];
      const failed = [];
      for (const f of got) {
        if (f.uid === input[1].uid) ref.push(item(f.uid, { '00081196': { vr: 'US', Value: [0xb006] } }));
        else if (f.uid === input[2].uid) failed.push(item(f.uid, { '00081197': { vr: 'US', Value: [0xa700] } }));
        else if (f.uid !== input[3].uid) ref.push(item(f.uid)); // input[3]: not acknowledged
      }
      const body = { '00081190': { vr: 'UR', Value: ['x'] } };
      if (ref.length) body['00081199'] = { vr: 'SQ', Value: ref };
      if (failed.length) body['00081198'] = { vr: 'SQ', Value: failed };
      res.writeHead(failed.length ? 202 : 200, { 'Content-Type': 'application/dicom+json' });
      res.end(JSON.stringify(body));
    });
  }, async (base) => {
    const progress = [];
    async function* gen() { for (const f of input) yield f.bytes; }
    const out = await stow(base, gen(), {
      token: 'tok-123', batchBytes: input[0].bytes.length + 10, onProgress: (p) => progress.push(p),
    });
    assert.ok(progress.length >= 2);
    assert.equal(progress.at(-1).done, input.length);
    return out;
  });
  assert.ok(requests.length >= 2, `${requests.length} batches`);
  assert.deepEqual(requests.flat().sort(), input.map((f) => f.uid).sort());
  assert.deepEqual(result.sent, [input[0].uid]);
  assert.deepEqual(result.alreadyPresent, [input[1].uid]);
  assert.deepEqual(result.failed.map((f) => f.uid).sort(), [input[2].uid, input[3].uid].sort());
  assert.match(result.failed.find((f) => f.uid === input[2].uid).reason, /0xA700 out of resources/);
});

test('an HTTP error or no server fails the batch with the reason', async () => {
  const input = files().slice(0, 2);
  const out = await withServer((req, res) => {
    req.resume();
    req.on('end', () => { res.writeHead(500); res.end('boom'); });
  }, (base) => stow(base, input.map((f) => f.bytes)));
  assert.deepEqual(out.failed.map((f) => f.reason), ['HTTP 500 Internal Server Error', 'HTTP 500 Internal Server Error']);
  const port = await withServer(() => {}, async (base) => base); // closed again: nobody listens
  const gone = await stow(port, input.map((f) => f.bytes));
  assert.equal(gone.failed.length, 2);
  assert.match(gone.failed[0].reason, /could not be reached/);
  const injected = await stow('http://example.invalid', input.map((f) => f.bytes), {
    fetchImpl: async () => new Response(JSON.stringify({ '00081199': { vr: 'SQ', Value: input.map((f) => item(f.uid)) } }), { status: 200 }),
  });
  assert.deepEqual(injected.sent, input.map((f) => f.uid));
});

test("a refusal's JSON reason (securepacs: an invalid import token) is named", async () => {
  const input = files().slice(0, 1);
  const out = await withServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(401, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'the import token is not valid (unknown, revoked or expired)' }));
    });
  }, (base) => stow(base, input.map((f) => f.bytes), { token: 'SPI1.x.y' }));
  assert.deepEqual(out.failed.map((f) => f.reason),
    ['HTTP 401 Unauthorized: the import token is not valid (unknown, revoked or expired)']);
});
