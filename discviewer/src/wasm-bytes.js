// The WebAssembly decoders as bytes, for the bundle: esbuild's binary loader
// (`--loader:.wasm=binary`) turns each import into a Uint8Array, so the page instantiates
// them from memory (no fetch, no Worker, no sibling file). Node cannot import .wasm files:
// node code calls setWasmSource() in codecs.js instead and never loads this module.
import libjpegturbo from '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasm';
import charls from '@cornerstonejs/codec-charls/decodewasm';
import openjpeg from '@cornerstonejs/codec-openjpeg/decodewasm';
import openjph from '@cornerstonejs/codec-openjph/wasm';

export default { libjpegturbo, charls, openjpeg, openjph };
