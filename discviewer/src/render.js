// From decoded sample values to screen pixels (PS3.3 C.11 and C.7.6.3, PS3.4 N.2 grayscale and
// colour pipelines):
// - Modality LUT as Rescale Slope/Intercept (C.11.1), also from the functional groups of
//   enhanced multi-frame objects (C.7.6.16.2.9 Pixel Value Transformation);
// - VOI LUT as a linear window (C.11.2.1.2.1: center c, width w; x <= c - 0.5 - (w-1)/2 -> 0,
//   x > c - 0.5 + (w-1)/2 -> max, else ((x - (c - 0.5)) / (w-1) + 0.5) * max);
// - MONOCHROME1 shown inverted (C.7.6.3.1.2);
// - PALETTE COLOR through the Red/Green/Blue Palette Color Lookup Tables (C.7.6.3.1.5-6): the
//   descriptor's first value 0 means 65536 entries; indices below the first mapped value use
//   the first entry, above the last use the last; entries are 8 or 16 bits (the real size is
//   taken from the data length, since some writers say 8 in the descriptor and store 16);
// - RGB shown as is (16-bit scaled to 8).
// Pure and allocation-free per pixel: one lookup table per call for integer data.

const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function groupItem(file, index) {
  const per = file.sequence('52009230');
  const shared = file.sequence('52009229');
  return { per: per[index], shared: shared[0] };
}

function fromGroups(file, index, seqTag, read) {
  const { per, shared } = groupItem(file, index ?? 0);
  for (const item of [per, shared]) {
    if (!item) continue;
    const inner = file.sequence(seqTag, item)[0];
    if (inner) {
      const v = read(inner);
      if (v !== undefined) return v;
    }
  }
  return undefined;
}

/** Rescale slope and intercept for a frame: { slope, intercept }. */
export function rescale(file, frame) {
  const index = frame && frame.index;
  const g = fromGroups(file, index, '00289145', (ds) => {
    const s = file.number('00281053', 0, ds);
    const i = file.number('00281052', 0, ds);
    return s === undefined && i === undefined ? undefined : { slope: s ?? 1, intercept: i ?? 0 };
  });
  if (g) return g;
  const slope = file.number('00281053');
  const intercept = file.number('00281052');
  return { slope: slope === undefined || slope === 0 ? 1 : slope, intercept: intercept ?? 0 };
}

function isMono(frame) {
  return frame.photometric === 'MONOCHROME1' || frame.photometric === 'MONOCHROME2';
}

/**
 * The window to show a frame with first: the file's own (Window Center/Width, or the frame's
 * Frame VOI LUT in functional groups), else the range of the frame's rescaled values.
 *
 * @returns {{center:number, width:number}}
 */
export function defaultWindow(dicomFile, frame) {
  const file = dicomFile;
  if (!isMono(frame)) {
    const max = frame.bitsStored > 8 && frame.photometric !== 'PALETTE COLOR' ? 2 ** frame.bitsStored - 1 : 255;
    return { center: (max + 1) / 2, width: max + 1 };
  }
  const own =
    fromGroups(file, frame.index, '00289132', (ds) => {
      const c = file.number('00281050', 0, ds);
      const w = file.number('00281051', 0, ds);
      return c !== undefined && w > 0 ? { center: c, width: w } : undefined;
    }) ||
    (() => {
      const c = file.number('00281050');
      const w = file.number('00281051');
      return c !== undefined && w > 0 ? { center: c, width: w } : undefined;
    })();
  if (own) return own;
  const px = frame.pixels;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < px.length; i++) {
    const v = px[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) return { center: 0, width: 1 };
  const { slope, intercept } = rescale(file, frame);
  let a = lo * slope + intercept;
  let b = hi * slope + intercept;
  if (a > b) [a, b] = [b, a];
  return { center: (a + b) / 2, width: Math.max(b - a, 1) };
}

/** Output 0..255 of the linear VOI function for modality value x. */
function voi(x, c, w) {
  if (w <= 1) return x > c - 0.5 ? 255 : 0;
  const lo = c - 0.5 - (w - 1) / 2;
  const hi = c - 0.5 + (w - 1) / 2;
  if (x <= lo) return 0;
  if (x > hi) return 255;
  return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
}

const SEGMENTED = { '00281201': '00281221', '00281202': '00281222', '00281203': '00281223' };

function words(bytes, le) {
  const n = bytes.length >> 1;
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = le ? bytes[2 * i] | (bytes[2 * i + 1] << 8) : (bytes[2 * i] << 8) | bytes[2 * i + 1];
  return out;
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Expand segmented LUT data (PS3.3 C.7.9.2: discrete, linear and indirect segments) into at
 * most `entries` values, the way pydicom does (linear segments rounded half to even, indirect
 * offsets counted in words). Bounded: output size, nesting depth and segment count.
 */
export function expandSegmented(data, entries) {
  const out = new Uint16Array(entries);
  let n = 0;
  let steps = 0;
  const run = (start, maxSegments, depth) => {
    let off = start;
    let segments = 0;
    while (off + 1 < data.length && n < entries && steps++ < 1 << 20) {
      const op = data[off];
      const len = data[off + 1];
      off += 2;
      if (op === 0) {
        for (let i = 0; i < len && n < entries && off + i < data.length; i++) out[n++] = data[off + i];
        off += len;
      } else if (op === 1) {
        if (n === 0) throw new Error('The segmented palette starts with a linear segment.');
        const y0 = out[n - 1];
        const y1 = data[off++];
        const step = len > 1 ? (y1 - (y0 + (y1 - y0) / len)) / (len - 1) : 0;
        const a = y0 + (y1 - y0) / len;
        for (let j = 0; j < len && n < entries; j++) out[n++] = y0 === y1 ? y1 : j === len - 1 ? y1 : roundHalfEven(j * step + a);
      } else if (op === 2) {
        if (n === 0 || depth >= 4) throw new Error('The segmented palette has a bad indirect segment.');
        const target = (data[off + 1] << 16) | data[off];
        off += 2;
        run(target, len, depth + 1);
      } else {
        throw new Error(`The segmented palette has an unknown segment type ${op}.`);
      }
      if (++segments === maxSegments) return;
    }
  };
  run(0, Infinity, 0);
  return out;
}

function paletteTables(file) {
  const tables = [];
  for (const [desc, data] of [['00281101', '00281201'], ['00281102', '00281202'], ['00281103', '00281203']]) {
    let entries = file.number(desc, 0);
    const first = file.number(desc, 1) ?? 0;
    const nominal = file.number(desc, 2) ?? 16;
    if (entries === 0) entries = 65536;
    let bytes = file.bytesOf(data);
    let wide;
    let raw;
    const le = file.littleEndian;
    if (!bytes) {
      // Segmented Palette Color Lookup Table Data (0028,1221-1223), C.7.9.2
      const seg = file.bytesOf(SEGMENTED[data]);
      if (entries === undefined || !seg) throw new Error('The palette colour lookup tables are missing.');
      raw = expandSegmented(words(seg, le), entries);
      wide = true;
    } else {
      if (entries === undefined) throw new Error('The palette colour lookup tables are missing.');
      wide = bytes.length >= entries * 2;
      raw = new Uint16Array(entries);
      for (let i = 0; i < entries; i++) {
        if (wide) raw[i] = le ? bytes[2 * i] | (bytes[2 * i + 1] << 8) : (bytes[2 * i] << 8) | bytes[2 * i + 1];
        else raw[i] = i < bytes.length ? bytes[i] : 0;
      }
    }
    const lut = new Uint8Array(entries);
    let max = 0;
    for (let i = 0; i < entries; i++) if (raw[i] > max) max = raw[i];
    // 16-bit entries are scaled to 8 bits; a table said to be 8-bit but stored in 16-bit words
    // whose values all fit in 8 bits is used as it is.
    const shift = wide && !(nominal === 8 && max <= 255) ? 8 : 0;
    for (let i = 0; i < entries; i++) lut[i] = raw[i] >> shift;
    tables.push({ lut, first, entries });
  }
  return tables;
}

/**
 * Render a decoded frame as RGBA bytes for a canvas ImageData.
 *
 * @param {import('./dicom.js').DicomFile} dicomFile
 * @param {object} frame from decodeFrame
 * @param {{center?:number, width?:number, invert?:boolean}} [opts] window (modality units) and
 *   an extra inversion; the default window is defaultWindow's
 * @returns {Uint8ClampedArray} rows * columns * 4 bytes
 */
export function renderRGBA(dicomFile, frame, { center, width, invert = false } = {}) {
  const n = frame.rows * frame.columns;
  const out = new Uint8ClampedArray(n * 4);
  const px = frame.pixels;
  if (frame.photometric === 'PALETTE COLOR') {
    const [r, g, b] = paletteTables(dicomFile);
    const paint = (t, off) => {
      const { lut, first, entries } = t;
      const last = lut[entries - 1];
      const head = lut[0];
      for (let i = 0, j = off; i < n; i++, j += 4) {
        const k = px[i] - first;
        out[j] = k <= 0 ? head : k >= entries ? last : lut[k];
      }
    };
    paint(r, 0);
    paint(g, 1);
    paint(b, 2);
    for (let j = 3; j < out.length; j += 4) out[j] = 255;
    if (invert) for (let j = 0; j < out.length; j += 4) (out[j] = 255 - out[j]), (out[j + 1] = 255 - out[j + 1]), (out[j + 2] = 255 - out[j + 2]);
    return out;
  }
  if (frame.samplesPerPixel >= 3) {
    const spp = frame.samplesPerPixel;
    const shift = frame.bitsAllocated > 8 ? Math.max(0, frame.bitsStored - 8) : 0;
    const x = invert ? 255 : 0;
    for (let i = 0, s = 0, j = 0; i < n; i++, s += spp, j += 4) {
      out[j] = x ^ (px[s] >> shift);
      out[j + 1] = x ^ (px[s + 1] >> shift);
      out[j + 2] = x ^ (px[s + 2] >> shift);
      out[j + 3] = 255;
    }
    return out;
  }
  if (center === undefined || width === undefined) ({ center, width } = defaultWindow(dicomFile, frame));
  const { slope, intercept } = rescale(dicomFile, frame);
  const flip = (frame.photometric === 'MONOCHROME1') !== !!invert;
  const integer = !(px instanceof Float32Array || px instanceof Float64Array) && px.BYTES_PER_ELEMENT <= 2;
  if (integer) {
    // One table over every possible stored value (at most 65536 entries).
    const signed = px instanceof Int8Array || px instanceof Int16Array;
    const size = px.BYTES_PER_ELEMENT === 1 ? 256 : 65536;
    const base = signed ? size / 2 : 0;
    const lut = new Uint32Array(size);
    const lo = center - 0.5 - (width - 1) / 2;
    const hi = center - 0.5 + (width - 1) / 2;
    const scale = width <= 1 ? 0 : 255 / (width - 1);
    const off = center - 0.5;
    for (let k = 0; k < size; k++) {
      const x = (k - base) * slope + intercept;
      let v;
      if (width <= 1) v = x > off ? 255 : 0;
      else if (x <= lo) v = 0;
      else if (x > hi) v = 255;
      else v = Math.round((x - off) * scale + 127.5);
      if (flip) v = 255 - v;
      lut[k] = LITTLE ? 0xff000000 | (v << 16) | (v << 8) | v : ((v << 24) | (v << 16) | (v << 8) | 0xff) >>> 0;
    }
    const out32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) out32[i] = lut[px[i] + base];
    return out;
  }
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    let v = voi(px[i] * slope + intercept, center, width);
    if (flip) v = 255 - v;
    out[j] = v;
    out[j + 1] = v;
    out[j + 2] = v;
    out[j + 3] = 255;
  }
  return out;
}
