// STUB of src/dicom.js (contract) on dicom-parser.
import * as dp from 'dicom-parser';
const x = (tag) => (tag.startsWith('x') ? tag : `x${tag}`).toLowerCase();
export function parsePart10(bytes) {
  const dataSet = dp.parseDicom(bytes);
  const f = {
    dataSet,
    transferSyntax: dataSet.string('x00020010'),
    string: (t) => dataSet.string(x(t)),
    number: (t) => { const e = dataSet.elements[x(t)]; if (!e) return undefined; const v = dataSet.string(x(t)); return v !== undefined && /^[-+0-9.eE\\ ]+$/.test(v) ? parseFloat(v) : dataSet.uint16(x(t)); },
    sequence: (t) => dataSet.elements[x(t)]?.items?.map((i) => i.dataSet) || [],
    pixelDataElement: dataSet.elements.x7fe00010,
    frames: parseInt(dataSet.string('x00280008') || '1', 10),
    tags() {
      const out = [];
      const walk = (ds, depth) => { for (const k of Object.keys(ds.elements).sort()) { const e = ds.elements[k];
        let value = ''; try { value = e.items ? `${e.items.length} item(s)` : (e.length < 256 ? ds.string(k) || '' : `(${e.length} bytes)`); } catch { value = ''; }
        out.push({ tag: k.slice(1), vr: e.vr || '', name: '', value, depth });
        if (e.items) for (const it of e.items) walk(it.dataSet, depth + 1); } };
      walk(dataSet, 0); return out;
    },
  };
  return f;
}
export async function loadPart10(bytes) { return parsePart10(bytes); }
