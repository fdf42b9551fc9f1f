// Decoding one frame of Pixel Data (7FE0,0010) into sample values (PS3.5 section 8, Annex A.4
// and Annex G; PS3.3 C.7.6.3 Image Pixel module), with the same result as pydicom 3's
// `Dataset.pixel_array` with its defaults:
// - native data: little or big endian, planar configuration 1 made interleaved;
// - unused high bits (Bits Stored < Bits Allocated) masked, or sign-extended when
//   Pixel Representation is 1 (pydicom's `correct_unused_bits`); JPEG-LS and JPEG 2000 sign
//   correction as pydicom does it;
// - YBR_FULL and YBR_FULL_422 converted to RGB (PS3.3 C.7.6.3.1.2), as pydicom's `as_rgb`;
// - PALETTE COLOR returned as indices (render.js applies the lookup tables).

import { DicomError, EXPLICIT_BE } from './dicom.js';
import { decodeRle } from './rle.js';
import * as codecs from './codecs.js';
import { expand422, ybrFullToRgb, ybr422ToRgb } from './color.js';

export const TS = {
  implicitLE: '1.2.840.10008.1.2',
  explicitLE: '1.2.840.10008.1.2.1',
  deflated: '1.2.840.10008.1.2.1.99',
  explicitBE: '1.2.840.10008.1.2.2',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegExtended: '1.2.840.10008.1.2.4.51',
  jpegLossless57: '1.2.840.10008.1.2.4.57',
  jpegLossless70: '1.2.840.10008.1.2.4.70',
  jpegLsLossless: '1.2.840.10008.1.2.4.80',
  jpegLsNear: '1.2.840.10008.1.2.4.81',
  j2kLossless: '1.2.840.10008.1.2.4.90',
  j2k: '1.2.840.10008.1.2.4.91',
  htj2kLossless: '1.2.840.10008.1.2.4.201',
  htj2kRpcl: '1.2.840.10008.1.2.4.202',
  htj2k: '1.2.840.10008.1.2.4.203',
  rle: '1.2.840.10008.1.2.5',
};

const NATIVE = new Set([TS.implicitLE, TS.explicitLE, TS.deflated, TS.explicitBE]);
const J2K = new Set([TS.j2kLossless, TS.j2k]);
const HTJ2K = new Set([TS.htj2kLossless, TS.htj2kRpcl, TS.htj2k]);
const JLS = new Set([TS.jpegLsLossless, TS.jpegLsNear]);
const JPEG = new Set([TS.jpegBaseline, TS.jpegExtended]);
const JPEG_LL = new Set([TS.jpegLossless57, TS.jpegLossless70]);
const MAX_PIXELS = 1 << 28; // refuse frames above 256 Mi samples: hostile sizes cannot exhaust memory

/** Transfer syntaxes decodeFrame handles. */
export const SUPPORTED = new Set(Object.values(TS));

function arrayType(bitsAllocated, signed, float) {
  if (float) return bitsAllocated === 64 ? Float64Array : Float32Array;
  if (bitsAllocated <= 8) return signed ? Int8Array : Uint8Array;
  if (bitsAllocated <= 16) return signed ? Int16Array : Uint16Array;
  return signed ? Int32Array : Uint32Array;
}

/** Image Pixel module attributes of the file. */
export function pixelInfo(file) {
  const rows = file.number('00280010') ?? 0;
  const columns = file.number('00280011') ?? 0;
  const samplesPerPixel = file.number('00280002') ?? 1;
  const bitsAllocated = file.number('00280100') ?? 0;
  const bitsStored = file.number('00280101') ?? bitsAllocated;
  const pixelRepresentation = file.number('00280103') ?? 0;
  const planar = file.number('00280006') ?? 0;
  const photometric = (file.string('00280004') || (samplesPerPixel === 3 ? 'RGB' : 'MONOCHROME2')).toUpperCase();
  if (!(rows > 0 && columns > 0) || ![1, 8, 16, 32, 64].includes(bitsAllocated) || ![1, 3, 4].includes(samplesPerPixel)) {
    throw new DicomError('The image attributes (rows, columns, bits, samples) are missing or not valid.');
  }
  if (rows * columns * samplesPerPixel > MAX_PIXELS) throw new DicomError('The image is too large to show.');
  return { rows, columns, samplesPerPixel, bitsAllocated, bitsStored, pixelRepresentation, planar, photometric };
}

/** Planar (RRR..GGG..BBB) to interleaved (RGBRGB..), in a new array of the same type. */
function interleave(src, n, spp) {
  const out = new src.constructor(n * spp);
  for (let s = 0; s < spp; s++) {
    const base = s * n;
    for (let i = 0, j = s; i < n; i++, j += spp) out[j] = src[base + i];
  }
  return out;
}

/** pydicom's correct_unused_bits: keep the low `bits` bits, sign-extended when signed. */
function fixBits(arr, bits, containerBits, signed) {
  if (bits >= containerBits || bits <= 0) return arr;
  if (signed) {
    const shift = 32 - bits;
    for (let i = 0; i < arr.length; i++) arr[i] = (arr[i] << shift) >> shift;
  } else {
    const mask = bits >= 32 ? 0xffffffff : (2 ** bits) - 1;
    for (let i = 0; i < arr.length; i++) arr[i] = arr[i] & mask;
  }
  return arr;
}

/** Same values as `arr`, reinterpreted in an array type (same byte size) of the wanted signedness. */
function retype(arr, Type) {
  if (arr instanceof Type) return arr;
  if (arr.BYTES_PER_ELEMENT === Type.BYTES_PER_ELEMENT) return new Type(arr.buffer, arr.byteOffset, arr.length);
  const out = new Type(arr.length);
  out.set(arr);
  return out;
}

function nativeFrame(file, info, index) {
  const { rows, columns, samplesPerPixel: spp, bitsAllocated: ba, photometric } = info;
  const el = file.pixelDataElement;
  const float = el.tag !== 'x7fe00010';
  const n = rows * columns;
  const ybr422 = photometric === 'YBR_FULL_422' || photometric === 'YBR_PARTIAL_422';
  if (ba === 1) {
    const bitsPerFrame = n * spp;
    const startBit = bitsPerFrame * index;
    if (Math.ceil((startBit + bitsPerFrame) / 8) > el.length) throw new DicomError('The pixel data is shorter than the image needs.');
    const out = new Uint8Array(bitsPerFrame);
    const ba8 = file.dataSet.byteArray;
    for (let i = 0; i < bitsPerFrame; i++) {
      const b = startBit + i;
      out[i] = (ba8[el.dataOffset + (b >> 3)] >> (b & 7)) & 1;
    }
    return out;
  }
  const bytesPerSample = ba / 8;
  const frameBytes = ybr422 ? n * 2 * bytesPerSample : n * spp * bytesPerSample;
  const start = el.dataOffset + frameBytes * index;
  if (frameBytes * (index + 1) > el.length) throw new DicomError('The pixel data is shorter than the image needs.');
  const Type = arrayType(ba, info.pixelRepresentation === 1, float);
  const bigEndian = file.transferSyntax === EXPLICIT_BE;
  let copy;
  if (bigEndian && bytesPerSample === 1 && el.vr === 'OW') {
    // 8-bit samples in OW words, big endian: each pair of bytes is swapped (PS3.5 7.3 and
    // A.3; pydicom's be_swap_ow). Swap whole words from an even offset, then take the frame.
    const rel = frameBytes * index;
    const a = rel & ~1;
    const b = Math.min(el.length, (rel + frameBytes + 1) & ~1);
    const words = file.dataSet.byteArray.slice(el.dataOffset + a, el.dataOffset + b);
    for (let i = 0; i + 1 < words.length; i += 2) {
      const t = words[i];
      words[i] = words[i + 1];
      words[i + 1] = t;
    }
    copy = words.slice(rel - a, rel - a + frameBytes);
  } else {
    copy = file.dataSet.byteArray.slice(start, start + frameBytes);
  }
  if (bigEndian && bytesPerSample > 1) {
    for (let i = 0; i < copy.length; i += bytesPerSample) copy.subarray(i, i + bytesPerSample).reverse();
  }
  let arr = new Type(copy.buffer, 0, copy.length / bytesPerSample);
  if (ybr422) return arr; // expanded and converted by the caller
  if (!float) fixBits(arr, info.bitsStored, ba, info.pixelRepresentation === 1);
  if (spp > 1 && info.planar === 1) arr = interleave(arr, n, spp);
  return arr;
}

async function compressedFrame(file, info, index) {
  const ts = file.transferSyntax;
  const bytes = file.encapsulatedFrame(index);
  const signed = info.pixelRepresentation === 1;
  const { rows, columns, samplesPerPixel: spp, bitsAllocated: ba } = info;
  const Type = arrayType(ba, signed, false);
  let out;
  if (ts === TS.rle) {
    return decodeRle(bytes, info);
  } else if (JPEG.has(ts)) {
    const { precision, ycc } = jpegInfo(bytes);
    if (precision > 8) out = await codecs.decodeJpeg12(bytes, { rows, columns, signed });
    else if (ycc && info.photometric === 'RGB') out = await codecs.decodeJpeg8Raw(bytes, { rows, columns });
    else {
      out = await codecs.decodeJpeg8(bytes, false);
      // libjpeg leaves RGB-coded streams (Adobe transform 0, component IDs R G B) as they are:
      // when the file says YBR_FULL(_422) for one, convert as pydicom does.
      if (!ycc && spp === 3 && info.photometric.startsWith('YBR_FULL')) out.pixels = ybrFullToRgb(out.pixels, rows * columns);
    }
  } else if (JPEG_LL.has(ts)) {
    out = await codecs.decodeJpegLossless(bytes, { bitsAllocated: ba, signed: false });
  } else if (JLS.has(ts)) {
    out = await codecs.decodeJpegLs(bytes, false);
    const arr = retype(out.pixels, Type);
    if (signed) fixBits(arr, out.bits, 32, true);
    return checkSize(arr, info);
  } else if (J2K.has(ts) || HTJ2K.has(ts)) {
    out = J2K.has(ts) ? await codecs.decodeJ2k(bytes, signed) : await codecs.decodeHtj2k(bytes, signed);
    const codecSigned = out.pixels instanceof Int8Array || out.pixels instanceof Int16Array;
    const arr = retype(out.pixels, Type);
    const mono = info.photometric.startsWith('MONOCHROME');
    if (codecSigned !== signed && mono) fixBits(arr, out.bits, 32, signed);
    return checkSize(arr, info);
  } else {
    throw new DicomError(`This transfer syntax (${ts}) cannot be shown.`);
  }
  if (out.components !== spp && !(spp === 3 && out.components === 3)) {
    throw new DicomError('The compressed frame does not match the image attributes.');
  }
  const arr = retype(out.pixels, Type);
  fixBits(arr, info.bitsStored, ba, signed);
  return checkSize(arr, info);
}

function checkSize(arr, info) {
  const want = info.rows * info.columns * info.samplesPerPixel;
  if (arr.length < want) throw new DicomError('The decoded frame is smaller than the image attributes say.');
  return arr.length === want ? arr : arr.subarray(0, want);
}

/**
 * From a JPEG stream's markers (ISO/IEC 10918-1 B.2, JFIF APP0, Adobe APP14): the sample
 * precision (SOF), and whether libjpeg takes 3 components as YCbCr and converts them to RGB
 * (its rule: JFIF marker, or Adobe transform 1, or no Adobe marker and IDs other than R G B).
 */
export function jpegInfo(bytes) {
  let i = 2;
  let precision = 8;
  let jfif = false;
  let adobe = null;
  let ids = [];
  while (i + 4 < bytes.length) {
    if (bytes[i] !== 0xff) {
      i++;
      continue;
    }
    const m = bytes[i + 1];
    if (m === 0xff) {
      i++;
      continue;
    }
    if (m === 0xd8 || (m >= 0xd0 && m <= 0xd7) || m === 0x01) {
      i += 2;
      continue;
    }
    if (m === 0xda || m === 0xd9) break; // start of scan: the header is over
    const len = (bytes[i + 2] << 8) | bytes[i + 3];
    const body = i + 4;
    if (m === 0xe0 && bytes[body] === 0x4a && bytes[body + 1] === 0x46 && bytes[body + 2] === 0x49 && bytes[body + 3] === 0x46) jfif = true;
    if (m === 0xee && len >= 12 && bytes[body] === 0x41 && bytes[body + 1] === 0x64 && bytes[body + 2] === 0x6f && bytes[body + 3] === 0x62) adobe = bytes[body + 11];
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      precision = bytes[body];
      const nc = bytes[body + 5];
      ids = [];
      for (let c = 0; c < nc; c++) ids.push(bytes[body + 6 + 3 * c]);
    }
    i += 2 + len;
  }
  const rgbIds = ids.length === 3 && ids[0] === 0x52 && ids[1] === 0x47 && ids[2] === 0x42;
  const ycc = ids.length === 3 && (jfif || adobe === 1 || (adobe === null && !rgbIds));
  return { precision, ycc };
}

/** Sample precision from a JPEG stream's SOF marker (8 or 12; up to 16 for lossless). */
export function jpegPrecision(bytes) {
  return jpegInfo(bytes).precision;
}

/**
 * Decode frame `frameIndex` (0-based) of a parsed file.
 *
 * @param {import('./dicom.js').DicomFile} dicomFile
 * @param {number} frameIndex
 * @returns {Promise<{rows:number, columns:number, samplesPerPixel:number, photometric:string,
 *   bitsAllocated:number, bitsStored:number, pixelRepresentation:number,
 *   pixels: Uint8Array|Int8Array|Uint16Array|Int16Array|Uint32Array|Int32Array|Float32Array|Float64Array,
 *   index: number}>}
 * @throws {DicomError} no pixel data, unsupported transfer syntax, damaged data
 */
export async function decodeFrame(dicomFile, frameIndex = 0) {
  const file = dicomFile;
  if (!file.pixelDataElement) throw new DicomError('This file has no image.');
  if (!(frameIndex >= 0 && frameIndex < file.frames)) throw new DicomError(`There is no frame ${frameIndex + 1}.`);
  const ts = file.transferSyntax;
  if (!SUPPORTED.has(ts)) throw new DicomError(`This transfer syntax (${ts}) cannot be shown.`);
  const info = pixelInfo(file);
  let pixels;
  try {
    pixels = NATIVE.has(ts) ? nativeFrame(file, info, frameIndex) : await compressedFrame(file, info, frameIndex);
  } catch (e) {
    if (e instanceof DicomError) throw e;
    throw new DicomError(`The image cannot be decoded (${(e && e.message) || e}).`);
  }
  let photometric = info.photometric;
  const n = info.rows * info.columns;
  if (photometric === 'YBR_FULL_422' && NATIVE.has(ts)) {
    pixels = ybr422ToRgb(pixels, info.rows, info.columns);
    photometric = 'RGB';
  } else if (photometric === 'YBR_PARTIAL_422' && NATIVE.has(ts)) {
    pixels = expand422(pixels, info.rows, info.columns); // one triplet per pixel, not converted
  } else if ((photometric === 'YBR_ICT' || photometric === 'YBR_RCT') && (J2K.has(ts) || HTJ2K.has(ts))) {
    photometric = 'RGB'; // the JPEG 2000 decoder applied the inverse component transform
  } else if (photometric === 'YBR_FULL_422' || photometric === 'YBR_FULL') {
    // JPEG: libjpeg-turbo converts YCbCr to RGB itself, as pydicom's JPEG plugins do.
    if (!JPEG.has(ts) && info.bitsAllocated === 8 && info.samplesPerPixel === 3) pixels = ybrFullToRgb(pixels, n);
    photometric = 'RGB';
  }
  return {
    rows: info.rows,
    columns: info.columns,
    samplesPerPixel: info.samplesPerPixel,
    photometric,
    bitsAllocated: info.bitsAllocated,
    bitsStored: info.bitsStored,
    pixelRepresentation: info.pixelRepresentation,
    pixels,
    index: frameIndex,
  };
}
