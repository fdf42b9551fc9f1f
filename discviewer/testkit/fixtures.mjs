// Fixtures made at test time: the Python package, openssl, pydicom's test files. No key,
// certificate or encrypted file is committed.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PY = join(ROOT, '.venv', 'bin', 'python');
export const SECUREPACS = join(ROOT, '.venv', 'bin', 'securepacs');
export const PASSWORD = 'correct horse battery staple';
export const OPENSSL_PASSWORD = 'pass with spaces\\and backslash';

export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { timeout: 120_000, stdio: ['pipe', 'pipe', 'pipe'], ...opts });
}

export function tempDir(t, name = 'dvc-') {
  const dir = mkdtempSync(join(tmpdir(), name));
  if (t && t.after) t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function python(code, args = []) {
  return run(PY, ['-c', code, ...args]).toString();
}

/** Path of a pydicom test file. */
export function testdata(name) {
  return python('import sys; from pydicom.data import get_testdata_file as g; print(g(sys.argv[1]))', [name]).trim();
}

export function walk(dir) {
  const out = [];
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) out.push(...walk(p)); else out.push(p);
  }
  return out.sort();
}

export function bytes(path) {
  return new Uint8Array(readFileSync(path));
}

/** A self-signed RSA certificate and key (PKCS #8 PEM), made by openssl. */
export function rsaPair(dir, name = 'holder') {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
    '-subj', `/CN=${name}`, '-days', '2', '-addext', 'keyUsage=keyEncipherment,digitalSignature']);
  return { key, cert };
}

export { writeFileSync, readFileSync, join };
