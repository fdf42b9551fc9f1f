// STUB of src/decode.js (contract): native little endian only.
export async function decodeFrame(df, i) {
  const d = df.dataSet; const rows = d.uint16('x00280010'); const columns = d.uint16('x00280011');
  const spp = d.uint16('x00280002') || 1; const ba = d.uint16('x00280100'); const pr = d.uint16('x00280103') || 0;
  const e = df.pixelDataElement; const n = rows * columns * spp; const off = d.byteArray.byteOffset + e.dataOffset + i * n * (ba / 8);
  const buf = d.byteArray.buffer.slice(off, off + n * (ba / 8));
  const pixels = ba === 8 ? new Uint8Array(buf) : (pr ? new Int16Array(buf) : new Uint16Array(buf));
  return { rows, columns, samplesPerPixel: spp, photometric: d.string('x00280004'), bitsAllocated: ba, bitsStored: d.uint16('x00280101'), pixelRepresentation: pr, pixels };
}
