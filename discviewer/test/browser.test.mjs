// The DICOM modules bundled as the page bundles them (esbuild, one classic iife script,
// WebAssembly embedded as bytes) and run in Debian's Chromium and Firefox ESR (WebDriver
// BiDi) from file://: every decoder
// gives the same values as under node, and the page makes no request but its own two files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPart10 } from '../src/dicom.js';
import { decodeFrame } from '../src/decode.js';
import { useNodeWasm } from '../tools/wasm-node.mjs';
import { HAVE_PYTHON, testFile } from '../tools/helpers.mjs';

const BROWSERS = [
  ['Chromium', '/usr/bin/chromium', { args: ['--no-sandbox', '--disable-gpu'] }],
  ['Firefox ESR', '/usr/bin/firefox-esr', { browser: 'firefox', protocol: 'webDriverBiDi' }],
];
const NAMES = [
  'CT_small.dcm', 'image_dfl.dcm', 'MR_small_bigendian.dcm', 'MR_small_jp2klossless.dcm', 'JPEG2000.dcm',
  'SC_rgb_jpeg_dcmtk.dcm', 'SC_jpeg_no_color_transform.dcm', 'MR_small_jpeg_ls_lossless.dcm',
  'SC_rgb_jpeg_gdcm.dcm', 'MR_small_RLE.dcm', 'SC_ybr_full_422_uncompressed.dcm', 'examples_palette.dcm',
];

function hash(px) {
  let h = 0;
  for (let i = 0; i < px.length; i++) h = (Math.imul(h, 31) + px[i]) | 0;
  return h;
}

for (const [label, exe, launch] of BROWSERS) {
const skip = (!existsSync(exe) && `needs ${exe}`) || (!HAVE_PYTHON && 'needs the worktree .venv');
test(`bundled modules decode in ${label} from file:// exactly as under node`, { skip, timeout: 120000 }, async () => {
  useNodeWasm();
  const esbuild = await import('esbuild');
  const puppeteer = (await import('puppeteer-core')).default;
  const root = fileURLToPath(new URL('..', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'dvweb-'));
  const stub = join(root, 'src', 'node-stub.cjs');
  try {
    writeFileSync(join(dir, 'entry.mjs'), `
      import { loadPart10 } from ${JSON.stringify(join(root, 'src/dicom.js'))};
      import { decodeFrame } from ${JSON.stringify(join(root, 'src/decode.js'))};
      import { renderRGBA, defaultWindow } from ${JSON.stringify(join(root, 'src/render.js'))};
      globalThis.DV = { loadPart10, decodeFrame, renderRGBA, defaultWindow };`);
    await esbuild.build({
      entryPoints: [join(dir, 'entry.mjs')], bundle: true, format: 'iife', platform: 'browser',
      loader: { '.wasm': 'binary' }, alias: { zlib: stub, fs: stub, path: stub },
      outfile: join(dir, 'VIEWER.JS'), logLevel: 'silent', absWorkingDir: root,
    });
    writeFileSync(join(dir, 'INDEX.HTM'), '<!doctype html><meta charset="utf-8"><script src="VIEWER.JS"></script>');
    const browser = await puppeteer.launch({ executablePath: exe, headless: true, ...launch });
    try {
      const page = await browser.newPage();
      const requests = [];
      const errors = [];
      page.on('request', (r) => requests.push(r.url()));
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`file://${join(dir, 'INDEX.HTM')}`);
      for (const name of NAMES) {
        const bytes = testFile(name);
        const got = await page.evaluate(async (b64) => {
          const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const f = await DV.loadPart10(data);
          const fr = await DV.decodeFrame(f, 0);
          const rgba = DV.renderRGBA(f, fr, DV.defaultWindow(f, fr));
          let h = 0;
          for (let i = 0; i < fr.pixels.length; i++) h = (Math.imul(h, 31) + fr.pixels[i]) | 0;
          let r = 0;
          for (let i = 0; i < rgba.length; i++) r = (Math.imul(r, 31) + rgba[i]) | 0;
          return { h, r, type: fr.pixels.constructor.name };
        }, Buffer.from(bytes).toString('base64'));
        const { renderRGBA, defaultWindow } = await import('../src/render.js');
        const f = await loadPart10(bytes);
        const fr = await decodeFrame(f, 0);
        const want = { h: hash(fr.pixels), r: hash(renderRGBA(f, fr, defaultWindow(f, fr))), type: fr.pixels.constructor.name };
        assert.deepEqual(got, want, name);
      }
      assert.deepEqual(errors, []);
      // (Firefox's WebDriver BiDi reports no file:// requests; Chromium reports both files.)
      for (const u of requests) assert.ok(u.startsWith('file://') && /\/(INDEX\.HTM|VIEWER\.JS)$/.test(u), u);
      if (label === 'Chromium') assert.equal(requests.length, 2);
    } finally {
      await browser.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
}
