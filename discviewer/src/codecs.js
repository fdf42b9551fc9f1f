// Compressed-frame decoders for the encapsulated transfer syntaxes (PS3.5 section 8.2 and
// Annex A.4): the WebAssembly builds published as @cornerstonejs/codec-* (libjpeg-turbo for
// 8-bit JPEG baseline/extended, CharLS for JPEG-LS, OpenJPEG for JPEG 2000, OpenJPH for
// HTJ2K), jpeg-lossless-decoder-js for JPEG lossless (process 14), and the 12-bit JPEG
// (process 4) decoder that cornerstone's dicom-image-loader ships (a pdf.js JpegImage with
// getData16), exactly as cornerstone's own loader decodes 12-bit JPEG.
//
// Each WebAssembly module is instantiated lazily, on first use, from bytes given by the wasm
// source (default: the bundle's embedded bytes, see wasm-bytes.js; node tests inject a loader
// that reads node_modules). Emscripten's `wasmBinary` option makes it instantiate from those
// bytes: no fetch, no Worker, no file next to the page.

import libjpegTurboFactory from '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs';
import charlsFactory from '@cornerstonejs/codec-charls/decodewasmjs';
import openjpegFactory from '@cornerstonejs/codec-openjpeg/decodewasmjs';
import openjphFactory from '@cornerstonejs/codec-openjph/wasmjs';
import { Decoder as LosslessDecoder } from 'jpeg-lossless-decoder-js';
// Not in the package's "exports" map: reached by its file path (the package is a pinned
// dependency; the file is plain ES, no imports).
import JpegImage from '../node_modules/@cornerstonejs/dicom-image-loader/dist/esm/codecs/jpeg.js';

const FACTORIES = {
  libjpegturbo: libjpegTurboFactory,
  charls: charlsFactory,
  openjpeg: openjpegFactory,
  openjph: openjphFactory,
};

let wasmSource = async (name) => (await import('./wasm-bytes.js')).default[name];
const modules = new Map();
const JPEG12_BIAS = 15;

/**
 * Replace where the WebAssembly bytes come from (node tests: read them from node_modules).
 *
 * @param {(name: 'libjpegturbo'|'charls'|'openjpeg'|'openjph') => Promise<Uint8Array>} fn
 */
export function setWasmSource(fn) {
  wasmSource = fn;
  modules.clear();
}

/** Names of the codecs instantiated so far (for tests of laziness). */
export function loadedCodecs() {
  return [...modules.keys()];
}

function codec(name) {
  let p = modules.get(name);
  if (!p) {
    p = (async () => {
      const wasmBinary = await wasmSource(name);
      if (!wasmBinary) throw new Error(`The ${name} decoder is missing from this viewer.`);
      return FACTORIES[name]({ wasmBinary, locateFile: (f) => f, print: () => {}, printErr: () => {} });
    })();
    p.catch(() => modules.delete(name));
    modules.set(name, p);
  }
  return p;
}

function copyOut(frameInfo, decoded, signed) {
  // The decoders return a view into WebAssembly memory: copy it before the next call.
  const bytes = decoded.slice();
  if (frameInfo.bitsPerSample > 8) {
    return signed ? new Int16Array(bytes.buffer, 0, bytes.length >> 1) : new Uint16Array(bytes.buffer, 0, bytes.length >> 1);
  }
  return signed ? new Int8Array(bytes.buffer) : bytes;
}

function message(e, m) {
  if (typeof e === 'number' && m && m.getExceptionMessage) {
    try {
      return m.getExceptionMessage(e);
    } catch {
      return `error ${e}`;
    }
  }
  return (e && e.message) || String(e);
}

async function runWasm(name, Cls, bytes, signed, decodeCall = (d) => d.decode()) {
  const m = await codec(name);
  const d = new m[Cls]();
  try {
    d.getEncodedBuffer(bytes.length).set(bytes);
    decodeCall(d);
    const info = d.getFrameInfo();
    const out = {
      width: info.width,
      height: info.height,
      components: info.componentCount,
      bits: info.bitsPerSample,
      pixels: copyOut(info, d.getDecodedBuffer(), info.isSigned ?? signed),
    };
    return out;
  } catch (e) {
    throw new Error(`The ${name} decoder failed: ${message(e, m)}.`);
  } finally {
    if (d.delete) d.delete();
  }
}

/** JPEG baseline/extended, 8 bits per sample (libjpeg-turbo; YCbCr converted to RGB). */
export function decodeJpeg8(bytes, signed) {
  return runWasm('libjpegturbo', 'JPEGDecoder', bytes, signed);
}

/** JPEG extended, 12 bits per sample (pdf.js JpegImage from dicom-image-loader). */
export async function decodeJpeg12(bytes, { rows, columns, signed }) {
  const jpeg = new JpegImage();
  jpeg.parse(bytes);
  jpeg.colorTransform = false;
  const data = jpeg.getData16(columns, rows);
  // That JpegImage level-shifts 12-bit samples by 2056 * 4095 / 255 / 16 = 2063.6 instead of
  // 2048 (ISO/IEC 10918-1 A.3.1: 2^(P-1)), so its values are 15 or 16 too high. Taking 15 off
  // leaves them within +1 of libjpeg's; only samples above 4080 (saturation) stay capped there.
  for (let i = 0; i < data.length; i++) data[i] = data[i] > JPEG12_BIAS ? data[i] - JPEG12_BIAS : 0;
  const components = jpeg.components ? jpeg.components.length : 1;
  const pixels = signed ? new Int16Array(data.buffer, data.byteOffset, data.length) : new Uint16Array(data.buffer, data.byteOffset, data.length);
  return { width: columns, height: rows, components, bits: 12, pixels };
}

/**
 * JPEG baseline/extended 8-bit without any colour transform: for 3-component streams that
 * libjpeg would take as YCbCr (no JFIF/Adobe marker, component IDs 1-2-3) while the DICOM
 * Photometric Interpretation says RGB (pdf.js JpegImage from dicom-image-loader).
 */
export async function decodeJpeg8Raw(bytes, { rows, columns }) {
  const jpeg = new JpegImage();
  jpeg.parse(bytes);
  jpeg.colorTransform = false;
  const pixels = jpeg.getData(columns, rows);
  return { width: columns, height: rows, components: jpeg.components.length, bits: 8, pixels };
}

/** JPEG lossless, process 14 (any selection value). */
export async function decodeJpegLossless(bytes, { bitsAllocated, signed }) {
  const dec = new LosslessDecoder();
  const byteOut = bitsAllocated <= 8 ? 1 : 2;
  const data = dec.decode(bytes.buffer, bytes.byteOffset, bytes.length, byteOut);
  const buf = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  let pixels;
  if (byteOut === 1) pixels = signed ? new Int8Array(buf) : new Uint8Array(buf);
  else pixels = signed ? new Int16Array(buf) : new Uint16Array(buf);
  return { width: dec.frame.dimX, height: dec.frame.dimY, components: dec.frame.numComp, bits: dec.frame.precision, pixels };
}

/** JPEG-LS lossless and near-lossless (CharLS). */
export function decodeJpegLs(bytes, signed) {
  return runWasm('charls', 'JpegLSDecoder', bytes, signed);
}

/** JPEG 2000 (OpenJPEG). */
export function decodeJ2k(bytes, signed) {
  return runWasm('openjpeg', 'J2KDecoder', bytes, signed);
}

/** High-Throughput JPEG 2000 (OpenJPH), full resolution. */
export function decodeHtj2k(bytes, signed) {
  return runWasm('openjph', 'HTJ2KDecoder', bytes, signed, (d) => d.decode());
}
