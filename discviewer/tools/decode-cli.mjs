// Decode DICOM files with src/decode.js and write the raw sample values, for
// tests/integration/test_discviewer_decode.py (which compares them with pydicom).
// Usage: node tools/decode-cli.mjs LIST.json
//   LIST.json: [{ "path": "in.dcm", "out": "out.bin" }, ...]; every frame is decoded and
//   written one after another as little-endian values of the frame's array type.
// Prints one JSON line per file: { path, ok, frames, dtype, rows, columns, samplesPerPixel,
//   photometric, error }.
import { readFile, writeFile } from 'node:fs/promises';
import { loadPart10 } from '../src/dicom.js';
import { decodeFrame } from '../src/decode.js';
import { useNodeWasm } from './wasm-node.mjs';

useNodeWasm();
const DTYPES = new Map([
  [Uint8Array, 'u1'], [Int8Array, 'i1'], [Uint16Array, 'u2'], [Int16Array, 'i2'],
  [Uint32Array, 'u4'], [Int32Array, 'i4'], [Float32Array, 'f4'], [Float64Array, 'f8'],
]);

const list = JSON.parse(await readFile(process.argv[2], 'utf8'));
for (const { path, out } of list) {
  try {
    const file = await loadPart10(new Uint8Array(await readFile(path)));
    const parts = [];
    let f0;
    for (let i = 0; i < file.frames; i++) {
      const fr = await decodeFrame(file, i);
      f0 = f0 || fr;
      const p = fr.pixels;
      parts.push(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
    }
    await writeFile(out, Buffer.concat(parts));
    console.log(JSON.stringify({
      path, ok: true, frames: file.frames, dtype: DTYPES.get(f0.pixels.constructor),
      rows: f0.rows, columns: f0.columns, samplesPerPixel: f0.samplesPerPixel, photometric: f0.photometric,
    }));
  } catch (e) {
    console.log(JSON.stringify({ path, ok: false, error: String((e && e.message) || e) }));
  }
}
