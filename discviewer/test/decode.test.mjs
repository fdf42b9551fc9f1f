import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadPart10, parsePart10, DicomError } from '../src/dicom.js';
import { decodeFrame, jpegPrecision } from '../src/decode.js';
import { loadedCodecs, setWasmSource } from '../src/codecs.js';
import { decodeRle } from '../src/rle.js';
import { ybrFullToRgb } from '../src/color.js';
import { useNodeWasm, wasmLoads } from '../tools/wasm-node.mjs';
import { HAVE_PYTHON, testFile } from '../tools/helpers.mjs';

const opts = { skip: !HAVE_PYTHON && 'needs the worktree .venv (pydicom test files)' };

test('codecs are instantiated lazily, each once, from the bytes the wasm source gives', opts, async () => {
  useNodeWasm();
  wasmLoads.length = 0;
  assert.deepEqual(loadedCodecs(), []);
  await decodeFrame(parsePart10(testFile('CT_small.dcm')), 0);
  assert.deepEqual(loadedCodecs(), []); // native needs no codec
  const j2k = parsePart10(testFile('MR_small_jp2klossless.dcm'));
  await Promise.all([decodeFrame(j2k, 0), decodeFrame(j2k, 0)]);
  assert.deepEqual(loadedCodecs(), ['openjpeg']);
  await decodeFrame(parsePart10(testFile('SC_rgb_jpeg_dcmtk.dcm')), 0);
  assert.deepEqual(loadedCodecs().sort(), ['libjpegturbo', 'openjpeg']);
  assert.deepEqual(wasmLoads.sort(), ['libjpegturbo', 'openjpeg']);
});

test('a missing codec is a clear error, and the next try can succeed', opts, async () => {
  setWasmSource(async () => undefined);
  const f = parsePart10(testFile('MR_small_jpeg_ls_lossless.dcm'));
  await assert.rejects(decodeFrame(f, 0), (e) => e instanceof DicomError && /charls decoder is missing/.test(e.message));
  useNodeWasm();
  const fr = await decodeFrame(f, 0);
  assert.equal(fr.pixels.length, 64 * 64);
  assert.ok(fr.pixels instanceof Int16Array);
});

test('frame fields and errors', opts, async () => {
  useNodeWasm();
  const f = parsePart10(testFile('CT_small.dcm'));
  const fr = await decodeFrame(f, 0);
  assert.deepEqual(
    [fr.rows, fr.columns, fr.samplesPerPixel, fr.photometric, fr.bitsAllocated, fr.bitsStored, fr.pixelRepresentation, fr.index],
    [128, 128, 1, 'MONOCHROME2', 16, 16, 1, 0],
  );
  assert.ok(fr.pixels instanceof Int16Array);
  await assert.rejects(decodeFrame(f, 1), /no frame 2/);
  // pixel data cut short: a clear error, not a wrong image
  const bytes = testFile('CT_small.dcm');
  const cut = parsePart10(bytes);
  cut.pixelDataElement.length -= 100;
  await assert.rejects(decodeFrame(cut, 0), /shorter/);
  const sr = parsePart10(testFile('rtplan.dcm'));
  await assert.rejects(decodeFrame(sr, 0), /no image/);
  // a compressed frame that is garbage
  const j = parsePart10(testFile('MR_small_jp2klossless.dcm').slice());
  const fr0 = j.pixelDataElement.fragments[0];
  j.dataSet.byteArray.fill(0x55, fr0.position + 20, fr0.position + fr0.length);
  await assert.rejects(decodeFrame(j, 0), (e) => e instanceof DicomError);
});

test('RLE (PS3.5 G): literal and replicate runs, byte planes MSB first, samples interleaved', () => {
  // 2x2 pixels, 16-bit, 1 sample: segments = high bytes, low bytes
  const hi = [0x01, 0x12, 0x34, 0xfd, 0x00]; // literal 2 bytes, then replicate 0x00 x4 (only 2 needed)
  const lo = [0xfd, 0x7f, 0x80, 0xff]; // replicate 0x7f x4; -128 is a no-op
  const header = new Uint8Array(64);
  const dv = new DataView(header.buffer);
  dv.setUint32(0, 2, true);
  dv.setUint32(4, 64, true);
  dv.setUint32(8, 64 + hi.length, true);
  const bytes = new Uint8Array([...header, ...hi, ...lo]);
  const out = decodeRle(bytes, { rows: 2, columns: 2, samplesPerPixel: 1, bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 0 });
  assert.deepEqual(Array.from(out), [0x127f, 0x347f, 0x007f, 0x007f]);
  const signed = decodeRle(bytes, { rows: 2, columns: 2, samplesPerPixel: 1, bitsAllocated: 16, bitsStored: 13, pixelRepresentation: 1 });
  // 13 bits stored: bit 12 is the sign, bits 13-15 are ignored
  assert.deepEqual(Array.from(signed), [0x127f - 0x2000, 0x147f - 0x2000, 0x7f, 0x7f]);
  assert.throws(() => decodeRle(bytes.subarray(0, 30), { rows: 2, columns: 2, samplesPerPixel: 1, bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 0 }), DicomError);
  assert.throws(() => decodeRle(bytes, { rows: 2, columns: 2, samplesPerPixel: 3, bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0 }), /segments/);
});

test('YBR_FULL to RGB: the PS3.3 C.7.6.3.1.2 equations', () => {
  const rgb = ybrFullToRgb(new Uint8Array([128, 128, 128, 255, 128, 128, 76, 85, 255]), 3);
  assert.deepEqual(Array.from(rgb.subarray(0, 6)), [128, 128, 128, 255, 255, 255]);
  assert.ok(rgb[6] >= 253 && rgb[7] <= 2 && rgb[8] <= 2, `red stays red: ${rgb.subarray(6)}`);
});

test('JPEG SOF precision', opts, async () => {
  const f = parsePart10(testFile('SC_rgb_jpeg_dcmtk.dcm'));
  assert.equal(jpegPrecision(f.encapsulatedFrame(0)), 8);
  const g = await loadPart10(testFile('JPEG-lossy.dcm'));
  assert.equal(jpegPrecision(g.encapsulatedFrame(0)), 12);
});

test('hostile image attributes: huge sizes and missing values are refused before any allocation', opts, async () => {
  const bytes = testFile('CT_small.dcm').slice();
  const f = parsePart10(bytes);
  const dv = new DataView(bytes.buffer);
  const rows = f.dataSet.elements.x00280010;
  const cols = f.dataSet.elements.x00280011;
  dv.setUint16(rows.dataOffset, 65535, true);
  dv.setUint16(cols.dataOffset, 65535, true);
  await assert.rejects(decodeFrame(parsePart10(bytes), 0), /too large/);
  dv.setUint16(rows.dataOffset, 0, true);
  await assert.rejects(decodeFrame(parsePart10(bytes), 0), /not valid/);
  dv.setUint16(rows.dataOffset, 4096, true);
  dv.setUint16(cols.dataOffset, 4096, true);
  await assert.rejects(decodeFrame(parsePart10(bytes), 0), /shorter/);
});
