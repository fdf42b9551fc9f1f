// STUB of src/zip.js (contract): not a real zip.
export class ZipWriter { constructor() { this.parts = []; } add(name, bytes) { this.parts.push(bytes); } async blob() { return new Blob(this.parts, { type: 'application/zip' }); } }
