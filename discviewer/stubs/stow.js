// STUB of src/stow.js (contract), dev only: one POST of every part, PS3.18 response parsed.
export async function stow(baseUrl, part10s, { token, onProgress } = {}) {
  const boundary = `stub-${Math.random().toString(16).slice(2)}`;
  const enc = new TextEncoder(); const parts = [];
  for await (const p of part10s) { parts.push(enc.encode(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), p, enc.encode('\r\n')); }
  parts.push(enc.encode(`--${boundary}--\r\n`));
  const headers = { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`, Accept: 'application/dicom+json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(`${baseUrl.replace(/\/$/, '')}/studies`, { method: 'POST', headers, body: new Blob(parts), credentials: 'omit' });
  const j = await r.json(); const uid = (i) => i['00081155'].Value[0];
  const ref = (j['00081199'] && j['00081199'].Value) || []; const failed = (j['00081198'] && j['00081198'].Value) || [];
  onProgress?.({ done: ref.length + failed.length });
  return { sent: ref.filter((i) => !i['00081196']).map(uid), alreadyPresent: ref.filter((i) => i['00081196']).map(uid), failed: failed.map((i) => ({ uid: uid(i), reason: `failure ${i['00081197'].Value[0]}` })) };
}
