// Display of DICOM values for people (PS3.5 6.2: DA, TM, PN).
export function date(da) {
  if (!da || !/^\d{8}$/.test(da.trim())) return (da || '').trim();
  const d = da.trim();
  return `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}`;
}
export function name(pn) {
  if (!pn) return '';
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = pn.split('=')[0].split('^');
  return [prefix, given, middle, family ? family.toUpperCase() : '', suffix].filter(Boolean).join(' ').trim() || pn;
}
export function text(value) { return value === undefined || value === null ? '' : String(value).trim(); }
