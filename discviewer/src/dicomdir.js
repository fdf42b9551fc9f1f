// The DICOMDIR's Basic Directory IOD (PS3.3 F.3, PS3.10 section 8): the Directory Record
// Sequence (0004,1220) holds the records of every directory entity; each record links to the
// next record of the same entity by Offset of the Next Directory Record (0004,1400) and to the
// first record of its lower-level entity by Offset of Referenced Lower-Level Directory Entity
// (0004,1420), both byte offsets from the start of the file to the record's item tag. The root
// entity starts at (0004,1200). Record types used here (F.5): PATIENT, STUDY, SERIES, and the
// instance-level records below a series (IMAGE, RT DOSE, SR DOCUMENT, ...), whose Referenced
// File ID (0004,1500) is a path whose components are the values of the multi-valued string.
//
// Hostile or damaged directories cannot loop or recurse without end: every record is visited
// at most once and the depth is at most 4. Offsets that point nowhere make the reader fall back
// to the order of the sequence items (records are written top-down in practice).

import { DicomError } from './dicom.js';

const MAX_DEPTH = 4;
const LEVELS = { PATIENT: 0, STUDY: 1, SERIES: 2 };

function fileId(file, ds) {
  const raw = file.string('00041500', ds);
  return raw ? raw.split('\\').map((p) => p.trim()).filter(Boolean).join('/') : '';
}

function makeNode(file, ds) {
  const type = file.string('00041430', ds).toUpperCase();
  switch (type) {
    case 'PATIENT':
      return {
        type,
        node: {
          id: file.string('00100020', ds),
          issuer: file.string('00100021', ds),
          name: file.string('00100010', ds),
          birthDate: file.string('00100030', ds),
          sex: file.string('00100040', ds),
          studies: [],
        },
      };
    case 'STUDY':
      return {
        type,
        node: {
          uid: file.string('0020000d', ds),
          date: file.string('00080020', ds),
          time: file.string('00080030', ds),
          description: file.string('00081030', ds),
          accession: file.string('00080050', ds),
          id: file.string('00200010', ds),
          modalities: file.string('00080061', ds).split('\\').filter(Boolean),
          series: [],
        },
      };
    case 'SERIES':
      return {
        type,
        node: {
          uid: file.string('0020000e', ds),
          modality: file.string('00080060', ds),
          number: file.number('00200011', 0, ds) ?? null,
          description: file.string('0008103e', ds),
          images: [],
        },
      };
    default:
      return {
        type,
        node: {
          type,
          fileId: fileId(file, ds),
          sopInstanceUid: file.string('00041511', ds),
          sopClassUid: file.string('00041510', ds),
          transferSyntax: file.string('00041512', ds),
          instanceNumber: file.number('00200013', 0, ds) ?? null,
        },
      };
  }
}

function attach(parentType, parent, type, node) {
  if (parentType === 'ROOT' && type === 'PATIENT') parent.patients.push(node);
  else if (parentType === 'PATIENT' && type === 'STUDY') parent.studies.push(node);
  else if (parentType === 'STUDY' && type === 'SERIES') parent.series.push(node);
  else if (parentType === 'SERIES' && !(type in LEVELS) && node.fileId) parent.images.push(node);
  else return false;
  return true;
}

function finish(result) {
  for (const p of result.patients) {
    for (const st of p.studies) {
      const mods = new Set(st.modalities);
      for (const se of st.series) if (se.modality) mods.add(se.modality);
      st.modalities = [...mods];
      st.series.sort((a, b) => (a.number ?? Infinity) - (b.number ?? Infinity));
      for (const se of st.series) se.images.sort((a, b) => (a.instanceNumber ?? Infinity) - (b.instanceNumber ?? Infinity));
    }
  }
  return result;
}

function inUse(file, ds) {
  const flag = file.number('00041410', 0, ds);
  return flag === undefined || flag !== 0;
}

/**
 * Read the patient / study / series / instance tree of a DICOMDIR.
 *
 * @param {import('./dicom.js').DicomFile} dicomFile the parsed DICOMDIR
 * @returns {{patients: Array<{id, issuer, name, birthDate, sex, studies: Array<{uid, date, time,
 *   description, accession, modalities: string[], series: Array<{uid, modality, number,
 *   description, images: Array<{fileId, sopInstanceUid, instanceNumber}>}>}>}>}}
 * @throws {DicomError} when the file has no Directory Record Sequence
 */
export function readDicomdir(dicomFile) {
  const file = dicomFile;
  const el = file.dataSet.elements.x00041220;
  if (!el || !el.items) throw new DicomError('This DICOMDIR has no directory records.');
  const items = el.items.filter((it) => it.dataSet);
  const byOffset = new Map();
  for (const it of items) byOffset.set(it.dataOffset - 8, it);
  const result = { patients: [] };
  const root = file.number('00041200');
  if (root !== undefined && byOffset.has(root)) {
    const visited = new Set();
    const walk = (offset, parentType, parent, depth) => {
      while (offset && byOffset.has(offset) && !visited.has(offset)) {
        visited.add(offset);
        const ds = byOffset.get(offset).dataSet;
        if (inUse(file, ds)) {
          const { type, node } = makeNode(file, ds);
          if (attach(parentType, parent, type, node) && type in LEVELS && depth < MAX_DEPTH) {
            walk(file.number('00041420', 0, ds), type, node, depth + 1);
          }
        }
        offset = file.number('00041400', 0, ds);
      }
    };
    walk(root, 'ROOT', result, 0);
    if (result.patients.length) return finish(result);
  }
  // Fallback: the records in sequence order, each attached to the last record of the level above.
  const last = { ROOT: result, PATIENT: null, STUDY: null, SERIES: null };
  for (const it of items) {
    if (!inUse(file, it.dataSet)) continue;
    const { type, node } = makeNode(file, it.dataSet);
    const parentType = type === 'PATIENT' ? 'ROOT' : type === 'STUDY' ? 'PATIENT' : type === 'SERIES' ? 'STUDY' : 'SERIES';
    const parent = last[parentType];
    if (!parent) continue;
    if (attach(parentType, parent, type, node) && type in LEVELS) {
      last[type] = node;
      if (type === 'PATIENT') last.STUDY = last.SERIES = null;
      if (type === 'STUDY') last.SERIES = null;
    }
  }
  return finish(result);
}
