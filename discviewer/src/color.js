// Colour space conversions of PS3.3 C.7.6.3.1.2: YBR_FULL and YBR_FULL_422 to RGB, with the
// same arithmetic as pydicom 3's convert_color_space (float32, round half up, clip 0..255).

const F = Math.fround;
const CB_G = F((-0.114 * 1.772) / 0.587);
const CR_G = F((-0.299 * 1.402) / 0.587);
const CB_B = F(1.772);
const CR_R = F(1.402);

function clip(v) {
  v = Math.floor(F(v + 0.5));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** YBR_FULL (interleaved, 8-bit) to RGB, in a new Uint8Array. */
export function ybrFullToRgb(src, n) {
  const out = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    const y = src[j];
    const cb = src[j + 1] - 128;
    const cr = src[j + 2] - 128;
    out[j] = clip(F(y + F(CR_R * cr)));
    out[j + 1] = clip(F(F(y + F(CB_G * cb)) + F(CR_G * cr)));
    out[j + 2] = clip(F(y + F(CB_B * cb)));
  }
  return out;
}

/** YBR_FULL_422 native data (Y1 Y2 Cb Cr per pair of pixels, PS3.3 C.7.6.3.1.2) to RGB. */
export function ybr422ToRgb(src, rows, columns) {
  return ybrFullToRgb(expand422(src, rows, columns), rows * columns);
}

/** 4:2:2 native data (Y1 Y2 Cb Cr per pair of pixels) to one Y Cb Cr triplet per pixel. */
export function expand422(src, rows, columns) {
  const n = rows * columns;
  const full = new Uint8Array(n * 3);
  let s = 0;
  let p = 0;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < columns; c += 2) {
      const y1 = src[s];
      const y2 = src[s + 1];
      const cb = src[s + 2];
      const cr = src[s + 3];
      s += 4;
      full[p] = y1;
      full[p + 1] = cb;
      full[p + 2] = cr;
      p += 3;
      if (c + 1 < columns) {
        full[p] = y2;
        full[p + 1] = cb;
        full[p + 2] = cr;
        p += 3;
      }
    }
  }
  return full;
}
