// STUB of src/dicomdir.js (contract).
export function readDicomdir(df) {
  const patients = []; let p, s, se;
  for (const it of df.dataSet.elements.x00041220.items) {
    const d = it.dataSet; const type = (d.string('x00041430') || '').trim();
    if (type === 'PATIENT') patients.push(p = { id: d.string('x00100020'), issuer: d.string('x00100021'), name: d.string('x00100010'), birthDate: d.string('x00100030'), sex: d.string('x00100040'), studies: [] });
    else if (type === 'STUDY') p.studies.push(s = { uid: d.string('x0020000d'), date: d.string('x00080020'), time: d.string('x00080030'), description: d.string('x00081030'), accession: d.string('x00080050'), modalities: [], series: [] });
    else if (type === 'SERIES') { s.series.push(se = { uid: d.string('x0020000e'), modality: d.string('x00080060'), number: d.string('x00200011'), description: d.string('x0008103e'), images: [] }); if (!s.modalities.includes(se.modality)) s.modalities.push(se.modality); }
    else if (type === 'IMAGE') se.images.push({ fileId: (d.string('x00041500') || '').split('\\').join('/'), sopInstanceUid: d.string('x00041511'), instanceNumber: parseInt(d.string('x00200013') || '0', 10) });
  }
  return { patients };
}
