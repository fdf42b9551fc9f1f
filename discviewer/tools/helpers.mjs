// Test helpers (node only): pydicom's test files, located through the worktree's .venv.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const PYTHON = fileURLToPath(new URL('../../.venv/bin/python', import.meta.url));
export const HAVE_PYTHON = existsSync(PYTHON);

let dir = null;
/** Folder of pydicom's bundled test files (pydicom/data/test_files). */
export function testFilesDir() {
  if (dir === null) {
    const r = spawnSync(PYTHON, ['-c', 'import os, pydicom.data as d; print(os.path.dirname(d.get_testdata_file("CT_small.dcm")))'], { encoding: 'utf8', timeout: 60000 });
    if (r.status !== 0) throw new Error(`pydicom test files not found: ${r.stderr}`);
    dir = r.stdout.trim();
  }
  return dir;
}

export function testFile(name) {
  return new Uint8Array(readFileSync(`${testFilesDir()}/${name}`));
}

/** Run a Python snippet with the worktree's .venv; returns stdout. */
export function python(code, args = []) {
  const r = spawnSync(PYTHON, ['-c', code, ...args], { encoding: 'utf8', timeout: 120000 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return r.stdout;
}
