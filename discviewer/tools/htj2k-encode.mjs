// Encode raw samples as an HTJ2K codestream (reversible, lossless) with OpenJPH's own encoder
// (the same @cornerstonejs/codec-openjph package, encoder half), for the pixel tests.
// Usage: node tools/htj2k-encode.mjs in.raw out.j2c width height bitsPerSample components signed(0|1)
//   in.raw: little-endian samples, interleaved, 1 byte (<= 8 bits) or 2 bytes per sample.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import factory from '@cornerstonejs/codec-openjph/wasmjs';

const [inp, out, w, h, bits, comps, signed] = process.argv.slice(2);
const wasm = new Uint8Array(await readFile(fileURLToPath(new URL('../node_modules/@cornerstonejs/codec-openjph/dist/openjphjs.wasm', import.meta.url))));
const m = await factory({ wasmBinary: wasm });
const enc = new m.HTJ2KEncoder();
const raw = new Uint8Array(await readFile(inp));
const frameInfo = {
  width: +w, height: +h, bitsPerSample: +bits, componentCount: +comps, isSigned: signed === '1',
  isUsingColorTransform: +comps === 3,
};
enc.getDecodedBuffer(frameInfo).set(raw);
enc.setQuality(true, 0);
enc.encode();
await writeFile(out, enc.getEncodedBuffer().slice());
