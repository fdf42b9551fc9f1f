// STUB of src/render.js (contract): grey only.
const num = (df, t, dflt) => { const v = df.dataSet.string(t); return v ? parseFloat(v.split('\\')[0]) : dflt; };
export function defaultWindow(df, frame) {
  const c = num(df, 'x00281050'); const w = num(df, 'x00281051');
  if (c !== undefined && w) return { center: c, width: w };
  let lo = Infinity, hi = -Infinity; for (const v of frame.pixels) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const m = num(df, 'x00281053', 1), b = num(df, 'x00281052', 0);
  return { center: ((lo + hi) / 2) * m + b, width: Math.max(1, (hi - lo) * m) };
}
export function renderRGBA(df, frame, { center, width, invert }) {
  const m = num(df, 'x00281053', 1), b = num(df, 'x00281052', 0); const n = frame.rows * frame.columns;
  const out = new Uint8ClampedArray(n * 4); const lo = center - width / 2;
  for (let i = 0; i < n; i++) { let g = ((frame.pixels[i * frame.samplesPerPixel] * m + b - lo) / width) * 255; if (invert) g = 255 - g;
    out[i * 4] = out[i * 4 + 1] = out[i * 4 + 2] = g; out[i * 4 + 3] = 255; }
  return out;
}
