// Builds the disc viewer into the package data folder src/securepacs/discviewer/:
//   INDEX.HTM            the start page (from index.html)
//   VIEWER/VIEWER.JS     one classic script (IIFE): the page, the modules and the WASM codecs
//   VIEWER/VIEWER.CSS    the style sheet
//   VIEWER/LICENSES.TXT  the licence of every third-party package in the bundle
// Names are ISO 9660 level 1 (8.3, upper case): the folder is copied onto discs as it is.
// Classic script only: Chromium refuses module scripts, workers and fetch of file:// siblings.
import { build } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, '..', 'src', 'securepacs', 'discviewer');
const temp = `${out}.tmp-${process.pid}`;
const BUDGET = 5 * 1024 * 1024;
// No network: only the disc (file: for Firefox) and the STOW-RS address the user types (https:).
// 'wasm-unsafe-eval' lets the codecs compile their embedded WebAssembly; nothing else is evaluated.
const CSP = ["default-src 'none'", "script-src 'self' 'wasm-unsafe-eval'", "style-src 'self'", "img-src 'self' data: blob:",
  "connect-src 'self' https:", "base-uri 'none'", "form-action 'none'"].join('; ');

const NODE_STUB = join(here, 'src', 'node-stub.cjs');
const NODE_BUILTINS = ['zlib', 'fs', 'path', 'crypto', 'module', 'worker_threads', 'url'];

let result;
try {
  result = await build({
    entryPoints: [join(here, 'src', 'page', 'main.js')],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['chrome110', 'firefox115'],
    minify: true,
    legalComments: 'none',
    loader: { '.wasm': 'binary' },
    // INDEX.HTM names the script twice (upper case, and lower case for ISO images mounted on
    // Linux without Rock Ridge/Joliet); where names ignore case both load: it runs once.
    banner: { js: 'if(!globalThis.__securepacsViewer){globalThis.__securepacsViewer=!0;' },
    footer: { js: '}' },
    // dicom-parser and the Emscripten glue name node modules behind runtime checks; they are
    // never reached in a browser: an empty stand-in (src/node-stub.cjs) takes their place.
    ...(existsSync(NODE_STUB)
      ? { alias: Object.fromEntries(NODE_BUILTINS.map((m) => [m, NODE_STUB])) }
      : { external: NODE_BUILTINS }),
    define: { 'process.env.NODE_ENV': '"production"' },
    metafile: true,
    write: false,
    outfile: join(here, 'VIEWER.JS'),
    logLevel: 'warning',
  });
} catch {
  console.error('discviewer: the build failed (esbuild names the problem above)');
  process.exit(1);
}

function licences(metafile) {
  const packages = new Map();
  for (const input of Object.keys(metafile.inputs)) {
    const parts = input.split(/[\\/]/);
    const at = parts.lastIndexOf('node_modules');
    if (at < 0) continue;
    const n = parts[at + 1].startsWith('@') ? 2 : 1;
    const dir = resolve(here, ...parts.slice(0, at + 1 + n));
    packages.set(dir, true);
  }
  const chunks = [
    'Third-party software in VIEWER.JS (the securepacs disc viewer)',
    '=============================================================',
    '',
    'The securepacs disc viewer itself is licensed under the Apache License 2.0.',
    'It bundles the packages below; each licence text is copied from the package.',
    '',
  ];
  const upstream = readFileSync(join(here, 'UPSTREAM.TXT'), 'utf8');
  for (const dir of [...packages.keys()].sort()) {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const files = readdirSync(dir).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort();
    chunks.push('-'.repeat(72), `${pkg.name} ${pkg.version} (${pkg.license || 'see below'})`,
      pkg.repository ? `source: ${typeof pkg.repository === 'string' ? pkg.repository : pkg.repository.url}` : '', '');
    if (files.length) {
      for (const f of files) chunks.push(readFileSync(join(dir, f), 'utf8').trim(), '');
    } else {
      chunks.push(`The package ships no licence file; its package.json declares "${pkg.license}".`,
        `Author: ${typeof pkg.author === 'string' ? pkg.author : pkg.author?.name || 'see the source'}.`, '');
    }
  }
  if (!packages.size) throw new Error('no third-party package found in the bundle (licence list would be empty)');
  chunks.push('-'.repeat(72), upstream.trim(), '');
  return { text: chunks.join('\n'), count: packages.size };
}

const js = result.outputFiles.find((f) => f.path.endsWith('VIEWER.JS'));
const css = readFileSync(join(here, 'src', 'page', 'viewer.css'), 'utf8');
const html = readFileSync(join(here, 'index.html'), 'utf8')
  .replaceAll('{{CSP}}', CSP)
;
const lic = licences(result.metafile);

// a build killed half-way leaves its temporary folder: remove every one before this build's
for (const name of readdirSync(dirname(out))) {
  if (name.startsWith('discviewer.tmp-')) rmSync(join(dirname(out), name), { recursive: true, force: true });
}
mkdirSync(join(temp, 'VIEWER'), { recursive: true });
writeFileSync(join(temp, 'INDEX.HTM'), html);
writeFileSync(join(temp, 'VIEWER', 'VIEWER.JS'), js.contents);
writeFileSync(join(temp, 'VIEWER', 'VIEWER.CSS'), css);
writeFileSync(join(temp, 'VIEWER', 'LICENSES.TXT'), lic.text);
const total = html.length + js.contents.length + css.length + lic.text.length;
if (total > BUDGET) {
  rmSync(temp, { recursive: true, force: true });
  throw new Error(`the viewer is ${(total / 1e6).toFixed(1)} MB, over its ${BUDGET / 1e6} MB budget`);
}
rmSync(out, { recursive: true, force: true });
renameSync(temp, out);
console.log(`discviewer: built ${relative(resolve(here, '..'), out) || out}${sep}INDEX.HTM + VIEWER/ `
  + `(${(total / 1e6).toFixed(2)} MB, ${lic.count} bundled packages)`);
