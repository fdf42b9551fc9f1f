// RLE Lossless (PS3.5 Annex G): a 64-byte header (number of segments, then 15 offsets, all
// 32-bit little endian), then one PackBits-coded segment per byte plane, most significant
// byte of each sample first (G.2), the samples of a pixel in separate segments (G.5).

import { DicomError } from './dicom.js';

function arrayType(bitsAllocated, signed) {
  if (bitsAllocated <= 8) return signed ? Int8Array : Uint8Array;
  if (bitsAllocated <= 16) return signed ? Int16Array : Uint16Array;
  return signed ? Int32Array : Uint32Array;
}

/** Decode one PackBits segment (G.3.1) into `out` (length = pixels per frame); returns bytes written. */
function unpack(src, start, end, out) {
  let i = start;
  let o = 0;
  const n = out.length;
  while (i < end && o < n) {
    const h = src[i++];
    if (h < 128) {
      const len = Math.min(h + 1, n - o, end - i);
      out.set(src.subarray(i, i + len), o);
      o += len;
      i += h + 1;
    } else if (h > 128) {
      const len = Math.min(257 - h, n - o);
      if (i >= end) break;
      out.fill(src[i++], o, o + len);
      o += len;
    }
  }
  return o;
}

/**
 * Decode an RLE Lossless frame into interleaved samples.
 *
 * @param {Uint8Array} bytes the frame (all its fragments)
 * @param {{rows:number, columns:number, samplesPerPixel:number, bitsAllocated:number,
 *   bitsStored:number, pixelRepresentation:number}} info
 */
export function decodeRle(bytes, info) {
  const { rows, columns, samplesPerPixel: spp, bitsAllocated } = info;
  const signed = info.pixelRepresentation === 1;
  const bps = Math.ceil(bitsAllocated / 8);
  const n = rows * columns;
  if (bytes.length < 64) throw new DicomError('The RLE frame is shorter than its header.');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const segments = dv.getUint32(0, true);
  if (segments !== spp * bps || segments > 15) {
    throw new DicomError(`The RLE frame has ${segments} segments where the image needs ${spp * bps}.`);
  }
  const offsets = [];
  for (let s = 0; s < segments; s++) offsets.push(dv.getUint32(4 + 4 * s, true));
  offsets.push(bytes.length);
  const Type = arrayType(bitsAllocated, signed);
  const out = new Type(n * spp);
  const plane = new Uint8Array(n);
  for (let s = 0; s < spp; s++) {
    for (let b = 0; b < bps; b++) {
      const seg = s * bps + b;
      const start = offsets[seg];
      const end = Math.min(offsets[seg + 1], bytes.length);
      if (start < 64 || start > end) throw new DicomError('The RLE frame has a bad segment offset.');
      plane.fill(0);
      unpack(bytes, start, end, plane);
      const shift = 8 * (bps - 1 - b);
      if (bps === 1) {
        for (let i = 0, j = s; i < n; i++, j += spp) out[j] = plane[i];
      } else {
        for (let i = 0, j = s; i < n; i++, j += spp) out[j] |= plane[i] << shift;
      }
    }
  }
  const bits = info.bitsStored;
  if (bits < bitsAllocated) {
    const sh = 32 - bits;
    const mask = 2 ** bits - 1;
    for (let i = 0; i < out.length; i++) out[i] = signed ? (out[i] << sh) >> sh : out[i] & mask;
  }
  return out;
}
