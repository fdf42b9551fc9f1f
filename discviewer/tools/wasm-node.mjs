// Node-only helper for tests: the codecs' WebAssembly bytes read from node_modules.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { setWasmSource } from '../src/codecs.js';

const FILES = {
  libjpegturbo: '@cornerstonejs/codec-libjpeg-turbo-8bit/dist/libjpegturbowasm_decode.wasm',
  charls: '@cornerstonejs/codec-charls/dist/charlswasm_decode.wasm',
  openjpeg: '@cornerstonejs/codec-openjpeg/dist/openjpegwasm_decode.wasm',
  openjph: '@cornerstonejs/codec-openjph/dist/openjphjs.wasm',
};

export const wasmLoads = [];

export function useNodeWasm() {
  setWasmSource(async (name) => {
    wasmLoads.push(name);
    const url = new URL(`../node_modules/${FILES[name]}`, import.meta.url);
    return new Uint8Array(await readFile(fileURLToPath(url)));
  });
}
