// Used by tests/integration/test_discviewer_reconcile.py: reconcile each file given.
// node reconcile-cli.mjs JOB.json   where JOB = { now, target, options, files: [[in, out]] }
import { readFileSync, writeFileSync } from 'node:fs';
import { reconcilePart10 } from '../src/reconcile.js';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
for (const [src, dst] of job.files) {
  const out = await reconcilePart10(new Uint8Array(readFileSync(src)), job.target,
    { ...job.options, now: new Date(job.now) });
  writeFileSync(dst, out);
}
