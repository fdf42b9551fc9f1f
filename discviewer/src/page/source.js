// Where the disc's files come from: the page's own folder read with fetch (Firefox, or a
// page served over http), or the files the user picked or dropped (Chromium from file://,
// which refuses fetch of sibling files). File IDs are DICOMDIR Referenced File IDs with '/'.

/** Files read with fetch, relative to the page (same folder tree). */
export class FetchSource {
  // `lowerCase`: the disc shows lower-case names (an ISO 9660 image without Rock Ridge or
  // Joliet mounted on Linux), so File IDs, upper case in the DICOMDIR, are read lower-cased.
  constructor(base, { lowerCase = false } = {}) { this.base = base; this.kind = 'fetch'; this.lowerCase = lowerCase; }

  async read(fileId) {
    const url = new URL(this.lowerCase ? fileId.toLowerCase() : fileId, this.base);
    let response;
    try {
      response = await fetch(url, { cache: 'no-store', credentials: 'omit' });
    } catch (err) {
      throw new DiscFileError(fileId, 'cannot be read from the disc');
    }
    if (!response.ok) throw new DiscFileError(fileId, 'is missing from the disc');
    return new Uint8Array(await response.arrayBuffer());
  }
}

/** Files the user chose (input webkitdirectory) or dropped, matched case-insensitively. */
export class FileListSource {
  constructor(entries /* Array<{path, file}> */) {
    this.kind = 'files';
    this.files = new Map();
    // ISO 9660 names may show as "IM000000." or "IM000000.;1": compared without those.
    const norm = (p) => p.split('/').map((part) => part.replace(/;1$/, '').replace(/\.$/, '')).join('/').toUpperCase();
    // Find the folder holding DICOMDIR (nearest the top); paths are made relative to it.
    const dicomdir = entries.map((e) => norm(e.path)).filter((p) => /(^|\/)DICOMDIR$/.test(p))
      .sort((a, b) => a.split('/').length - b.split('/').length)[0];
    this.found = dicomdir !== undefined;
    const prefix = dicomdir === undefined ? '' : dicomdir.slice(0, dicomdir.length - 'DICOMDIR'.length);
    for (const { path, file } of entries) {
      const key = norm(path);
      if (key.startsWith(prefix)) this.files.set(key.slice(prefix.length), file);
    }
  }

  async read(fileId) {
    const file = this.files.get(fileId.toUpperCase());
    if (!file) throw new DiscFileError(fileId, 'is missing from the chosen folder');
    return new Uint8Array(await file.arrayBuffer());
  }
}

export class DiscFileError extends Error {
  constructor(fileId, what) { super(`The file ${fileId} ${what}.`); this.fileId = fileId; this.code = 'missing'; }
}

/** Firefox (and http) can read the disc by itself; Chromium from file:// cannot. The names
 * are tried as written (upper case), then lower case (see FetchSource). */
export async function tryFetchSource(base) {
  for (const lowerCase of [false, true]) {
    const source = new FetchSource(base, { lowerCase });
    try {
      const bytes = await source.read('DICOMDIR');
      return { source, dicomdir: bytes };
    } catch {
      // not readable under this name: try the other case, then let the user choose the folder
    }
  }
  return null;
}

/** Entries from an <input type=file webkitdirectory>. */
export function entriesFromInput(fileList) {
  return [...fileList].map((file) => ({ path: file.webkitRelativePath || file.name, file }));
}

/** Entries from a drop of a folder (or of the disc's files), walked recursively, bounded. */
export async function entriesFromDrop(dataTransfer, limit = 200000) {
  const out = [];
  const roots = [...dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  const file = (entry) => new Promise((res, rej) => entry.file(res, rej));
  const list = (reader) => new Promise((res, rej) => reader.readEntries(res, rej));
  const stack = roots.map((e) => [e, e.isDirectory ? `${e.name}/` : '']);
  while (stack.length && out.length < limit) {
    const [entry, prefix] = stack.pop();
    if (entry.isFile) {
      out.push({ path: prefix ? prefix + entry.name : entry.name, file: await file(entry) });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (let batch = await list(reader); batch.length; batch = await list(reader)) {
        for (const child of batch) stack.push([child, child.isDirectory ? `${prefix}${child.name}/` : prefix]);
      }
    }
  }
  if (!roots.length && dataTransfer.files.length) {
    for (const f of dataTransfer.files) out.push({ path: f.name, file: f });
  }
  return out;
}
