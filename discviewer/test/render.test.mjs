import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePart10 } from '../src/dicom.js';
import { decodeFrame } from '../src/decode.js';
import { defaultWindow, renderRGBA, rescale } from '../src/render.js';
import { useNodeWasm } from '../tools/wasm-node.mjs';
import { HAVE_PYTHON, testFile, python } from '../tools/helpers.mjs';

const opts = { skip: !HAVE_PYTHON && 'needs the worktree .venv (pydicom test files)' };
useNodeWasm();

function grey(rgba) {
  const out = [];
  for (let i = 0; i < rgba.length; i += 4) {
    assert.equal(rgba[i], rgba[i + 1]);
    assert.equal(rgba[i], rgba[i + 2]);
    assert.equal(rgba[i + 3], 255);
    out.push(rgba[i]);
  }
  return out;
}

function frameOf(pixels, photometric = 'MONOCHROME2', extra = {}) {
  return { rows: 1, columns: pixels.length, samplesPerPixel: 1, photometric, bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 1, pixels, index: 0, ...extra };
}

test('rescale then the linear VOI function of PS3.3 C.11.2.1.2.1', opts, () => {
  const ct = parsePart10(testFile('CT_small.dcm')); // slope 1, intercept -1024
  assert.deepEqual(rescale(ct, null), { slope: 1, intercept: -1024 });
  // center 40, width 400: x <= -160 -> 0, x > 239 -> 255, else ((x - 39.5) / 399 + 0.5) * 255
  const stored = [-2000, 864, 865, 1064, 1263, 1264, 3000].map((x) => x);
  const f = frameOf(new Int16Array(stored));
  const want = [0, 0, 1, 128, 255, 255, 255];
  assert.deepEqual(grey(renderRGBA(ct, f, { center: 40, width: 400 })), want);
  // the same through the float path (32-bit data is not tabled)
  assert.deepEqual(grey(renderRGBA(ct, { ...f, pixels: new Float32Array(stored) }, { center: 40, width: 400 })), want);
  // MONOCHROME1 is shown inverted; `invert` inverts again
  assert.deepEqual(grey(renderRGBA(ct, frameOf(new Int16Array(stored), 'MONOCHROME1'), { center: 40, width: 400 })), want.map((v) => 255 - v));
  assert.deepEqual(grey(renderRGBA(ct, frameOf(new Int16Array(stored), 'MONOCHROME1'), { center: 40, width: 400, invert: true })), want);
  // width 1: a threshold at c - 0.5
  assert.deepEqual(grey(renderRGBA(ct, frameOf(new Int16Array([1063, 1064])), { center: 40, width: 1 })), [0, 255]);
});

test('default window: the file\'s own, else the range of the rescaled values', opts, async () => {
  const mr = parsePart10(testFile('MR_small.dcm'));
  const fr = await decodeFrame(mr, 0);
  assert.deepEqual(defaultWindow(mr, fr), { center: 600, width: 1600 });
  const ct = parsePart10(testFile('CT_small.dcm'));
  const f = frameOf(new Int16Array([100, 300, 1124]));
  assert.deepEqual(defaultWindow(ct, f), { center: ((100 + 1124) / 2) - 1024, width: 1024 });
  const rgba = renderRGBA(ct, f);
  assert.deepEqual(grey(rgba).map((v) => v > 0 && v < 255), [false, true, false]);
});

test('palette colour: 16-bit tables, first mapped value, 8-bit tables in 16-bit words', opts, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dvpal-'));
  try {
    python(`
import sys, numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
def make(path, desc, luts):
    ds = Dataset(); ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = '1.2.840.10008.5.1.4.1.1.7'
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 1, 5, 1
    ds.BitsAllocated = ds.BitsStored = 16; ds.HighBit = 15; ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = 'PALETTE COLOR'
    ds.PixelData = np.array([50, 100, 150, 355, 400], dtype='<u2').tobytes()
    for c, lut in zip(('Red', 'Green', 'Blue'), luts):
        setattr(ds, c + 'PaletteColorLookupTableDescriptor', desc)
        setattr(ds, c + 'PaletteColorLookupTableData', np.asarray(lut, dtype='<u2').tobytes())
    ds.save_as(path, enforce_file_format=True)
k = np.arange(256)
make(sys.argv[1], [256, 100, 16], [k * 256, (255 - k) * 256, np.full(256, 0x8000)])
make(sys.argv[2], [256, 100, 8], [k, 255 - k, np.full(256, 7)])
`, [join(dir, 'p16.dcm'), join(dir, 'p8.dcm')]);
    for (const name of ['p16.dcm', 'p8.dcm']) {
      const f = parsePart10(new Uint8Array(readFileSync(join(dir, name))));
      const fr = { rows: 1, columns: 5, samplesPerPixel: 1, photometric: 'PALETTE COLOR', bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 0, pixels: new Uint16Array([50, 100, 150, 355, 400]), index: 0 };
      const rgba = Array.from(renderRGBA(f, fr));
      const blue = name === 'p16.dcm' ? 0x80 : 7;
      // indices below 100 -> entry 0, 150 -> entry 50, at or above 355 -> the last entry
      assert.deepEqual(rgba, [0, 255, blue, 255, 0, 255, blue, 255, 50, 205, blue, 255, 255, 0, blue, 255, 255, 0, blue, 255], name);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('RGB shown as is; 16-bit RGB scaled to 8 bits; invert', () => {
  const fr = { rows: 1, columns: 2, samplesPerPixel: 3, photometric: 'RGB', bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, pixels: new Uint8Array([1, 2, 3, 250, 251, 252]) };
  assert.deepEqual(Array.from(renderRGBA(null, fr)), [1, 2, 3, 255, 250, 251, 252, 255]);
  assert.deepEqual(Array.from(renderRGBA(null, fr, { invert: true })), [254, 253, 252, 255, 5, 4, 3, 255]);
  const f16 = { ...fr, bitsAllocated: 16, bitsStored: 16, pixels: new Uint16Array([0x0100, 0xff00, 0x8000, 0, 0, 0]) };
  assert.deepEqual(Array.from(renderRGBA(null, f16)).slice(0, 4), [1, 255, 128, 255]);
});

test('speed (reported, not asserted): decode + render of a 512x512 CT frame and a JPEG 2000 frame', opts, async () => {
  const big = parsePart10(testFile('CT_small.dcm'));
  const px = new Int16Array(512 * 512);
  for (let i = 0; i < px.length; i++) px[i] = (i * 7919) % 4096;
  const fr = { ...frameOf(px), rows: 512, columns: 512 };
  renderRGBA(big, fr, { center: 40, width: 400 });
  let t = performance.now();
  const N = 20;
  for (let i = 0; i < N; i++) renderRGBA(big, fr, { center: 40 + i, width: 400 });
  const render = (performance.now() - t) / N;
  const j2k = parsePart10(testFile('693_J2KI.dcm')); // 512x512, 14 bits, lossy J2K
  await decodeFrame(j2k, 0);
  t = performance.now();
  for (let i = 0; i < 5; i++) renderRGBA(j2k, await decodeFrame(j2k, 0));
  const jt = (performance.now() - t) / 5;
  console.log(`# render 512x512 int16: ${render.toFixed(2)} ms; decode+render 512x512 JPEG 2000: ${jt.toFixed(1)} ms`);
});

test('enhanced multi-frame: rescale and window from the per-frame and shared functional groups', opts, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dvenh-'));
  try {
    python(`
import sys, numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
ds = Dataset(); ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = '1.2.840.10008.5.1.4.1.1.2.1'
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.NumberOfFrames = 1, 3, 1, 2
ds.BitsAllocated = ds.BitsStored = 16; ds.HighBit = 15; ds.PixelRepresentation = 0
ds.PhotometricInterpretation = 'MONOCHROME2'
ds.PixelData = np.array([[0, 50, 100], [0, 50, 100]], dtype='<u2').tobytes()
pvt = Dataset(); pvt.RescaleSlope = 2; pvt.RescaleIntercept = -100; pvt.RescaleType = 'HU'
shared = Dataset(); shared.PixelValueTransformationSequence = Sequence([pvt])
ds.SharedFunctionalGroupsSequence = Sequence([shared])
frames = []
for c, w in ((0, 201), (100, 2)):
    voi = Dataset(); voi.WindowCenter = c; voi.WindowWidth = w
    f = Dataset(); f.FrameVOILUTSequence = Sequence([voi]); frames.append(f)
ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
ds.save_as(sys.argv[1], enforce_file_format=True)
`, [join(dir, 'enh.dcm')]);
    const f = parsePart10(new Uint8Array(readFileSync(join(dir, 'enh.dcm'))));
    assert.equal(f.frames, 2);
    const f0 = await decodeFrame(f, 0);
    const f1 = await decodeFrame(f, 1);
    assert.deepEqual(rescale(f, f1), { slope: 2, intercept: -100 });
    assert.deepEqual(defaultWindow(f, f0), { center: 0, width: 201 });
    assert.deepEqual(defaultWindow(f, f1), { center: 100, width: 2 });
    // modality values -100, 0, 100: window 0/201 -> ((x + 0.5) / 200 + 0.5) * 255 = 0.64, 128.1, 255;
    // window 100/2 -> 0, 0, 255
    assert.deepEqual(grey(renderRGBA(f, f0, defaultWindow(f, f0))), [1, 128, 255]);
    assert.deepEqual(grey(renderRGBA(f, f1, defaultWindow(f, f1))), [0, 0, 255]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('segmented palette colour tables (C.7.9.2) expand as pydicom expands them', opts, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dvseg-'));
  try {
    const want = JSON.parse(python(`
import sys, json, numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.pixels import apply_color_lut
ds = Dataset(); ds.file_meta = FileMetaDataset()
ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = '1.2.840.10008.5.1.4.1.1.7'
ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
ds.Rows, ds.Columns, ds.SamplesPerPixel = 1, 256, 1
ds.BitsAllocated = ds.BitsStored = 8; ds.HighBit = 7; ds.PixelRepresentation = 0
ds.PhotometricInterpretation = 'PALETTE COLOR'
ds.PixelData = np.arange(256, dtype=np.uint8).tobytes()
# red: discrete 0, linear up to 65535 over 127, discrete 3 values, linear down over 125
red = [0, 1, 0, 1, 127, 65535, 0, 3, 1000, 2000, 3000, 1, 125, 7]
# green: discrete, linear, then an indirect copy of the two first segments (at word 0)
green = [0, 2, 5, 9, 1, 126, 40000, 2, 2, 0, 0]
# blue: one linear ramp of odd steps (rounding half to even matters)
blue = [0, 1, 1, 1, 255, 50001]
for c, seg in (('Red', red), ('Green', green), ('Blue', blue)):
    setattr(ds, c + 'PaletteColorLookupTableDescriptor', [256, 0, 16])
    setattr(ds, 'Segmented' + c + 'PaletteColorLookupTableData', np.asarray(seg, dtype='<u2').tobytes())
ds.save_as(sys.argv[1], enforce_file_format=True)
rgb = apply_color_lut(ds.pixel_array, ds)
print(json.dumps((rgb.astype(np.uint16) >> 8).reshape(-1).tolist()))
`, [join(dir, 'seg.dcm')]));
    const f = parsePart10(new Uint8Array(readFileSync(join(dir, 'seg.dcm'))));
    const fr = { rows: 1, columns: 256, samplesPerPixel: 1, photometric: 'PALETTE COLOR', bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, pixels: Uint8Array.from({ length: 256 }, (_, i) => i), index: 0 };
    const rgba = renderRGBA(f, fr);
    const got = [];
    for (let i = 0; i < rgba.length; i += 4) got.push(rgba[i], rgba[i + 1], rgba[i + 2]);
    assert.equal(got.length, want.length);
    assert.deepEqual(got, want);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
