/**
 * Send Part 10 files to a DICOMweb server with STOW-RS (PS3.18 10.5): POST {base}/studies,
 * Content-Type multipart/related; type="application/dicom" (RFC 2387), one part per file,
 * in batches of about `batchBytes`; the body is a Blob made of the parts (no copy of the
 * files). The response (PS3.18 10.5.3, application/dicom+json) lists ReferencedSOPSequence
 * (0008,1199) items (stored; WarningReason (0008,1196) = 0xB006 means "already present", the
 * securepacs duplicate rule) and FailedSOPSequence (0008,1198) items with FailureReason
 * (0008,1197). An HTTP error fails the whole batch with its status as the reason.
 */

import { sopInstanceUid } from './reconcile.js';

export { sopInstanceUid };

const REFERENCED = '00081199';
const FAILED = '00081198';
const SOP_INSTANCE = '00081155';
const WARNING_REASON = '00081196';
const FAILURE_REASON = '00081197';
const ALREADY_PRESENT = 0xb006;
const REASONS = {
  0x0110: 'processing failure', 0x0122: 'SOP class not supported', 0x0124: 'not authorized',
  0xa700: 'out of resources', 0xa900: 'data set does not match SOP class', 0xc000: 'cannot understand',
  0xc122: 'referenced transfer syntax not supported', 0xb006: 'already present',
};

function values(ds, tag) {
  const el = ds && ds[tag];
  return el && Array.isArray(el.Value) ? el.Value : [];
}

/** Parse a PS3.18 STOW-RS response body into { stored: [{uid, warning}], failed: [{uid, reason}] }. */
export function parseStowResponse(json) {
  const ds = Array.isArray(json) ? json[0] : json;
  const stored = values(ds, REFERENCED).map((item) => ({
    uid: String(values(item, SOP_INSTANCE)[0] || ''),
    warning: Number(values(item, WARNING_REASON)[0] || 0),
  }));
  const failed = values(ds, FAILED).map((item) => {
    const code = Number(values(item, FAILURE_REASON)[0] || 0);
    const name = REASONS[code] ? ` ${REASONS[code]}` : '';
    return { uid: String(values(item, SOP_INSTANCE)[0] || ''), reason: `0x${code.toString(16).toUpperCase().padStart(4, '0')}${name}` };
  });
  return { stored, failed };
}

function boundaryString() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return `securepacs-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

async function postBatch(url, batch, { token, fetchImpl }) {
  const boundary = boundaryString();
  const enc = new TextEncoder();
  const head = enc.encode(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`);
  const parts = [];
  for (const f of batch) parts.push(head, f.bytes, enc.encode('\r\n'));
  parts.push(enc.encode(`--${boundary}--\r\n`));
  const headers = {
    'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
    Accept: 'application/dicom+json',
  };
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetchImpl(url, { method: 'POST', headers, body: new Blob(parts) });
  } catch (err) {
    return { error: `the server could not be reached (${err && err.message ? err.message : err})` };
  }
  let json = null;
  const text = await response.text().catch(() => '');
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (json && (response.status === 200 || response.status === 202 || response.status === 409)) {
    return { result: parseStowResponse(json) };
  }
  // securepacs (and others) explain a refusal in a JSON body: {"error": "..."}
  const said = json && typeof json.error === 'string' ? `: ${json.error.slice(0, 200)}` : '';
  return { error: `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}${said}` };
}

/**
 * Send files by STOW-RS.
 *
 * @param {string} baseUrl the DICOMweb service root (…/dicom-web)
 * @param {Iterable<Uint8Array>|AsyncIterable<Uint8Array>} part10s
 * @param {{ token?: string, batchBytes?: number, onProgress?: Function, fetchImpl?: Function }} options
 * @returns {Promise<{ sent: string[], alreadyPresent: string[], failed: {uid: string, reason: string}[] }>}
 */
export async function stow(baseUrl, part10s, { token, batchBytes = 32 * 1024 * 1024, onProgress, fetchImpl = globalThis.fetch } = {}) {
  const url = `${String(baseUrl).replace(/\/+$/, '')}/studies`;
  const summary = { sent: [], alreadyPresent: [], failed: [] };
  let done = 0;
  let batch = [];
  let size = 0;
  const flush = async () => {
    if (!batch.length) return;
    const out = await postBatch(url, batch, { token, fetchImpl });
    if (out.error) {
      for (const f of batch) summary.failed.push({ uid: f.uid, reason: out.error });
    } else {
      const seen = new Set();
      for (const s of out.result.stored) {
        seen.add(s.uid);
        (s.warning === ALREADY_PRESENT ? summary.alreadyPresent : summary.sent).push(s.uid);
      }
      for (const f of out.result.failed) {
        seen.add(f.uid);
        summary.failed.push(f);
      }
      for (const f of batch) {
        if (!seen.has(f.uid)) summary.failed.push({ uid: f.uid, reason: 'the server did not acknowledge it' });
      }
    }
    done += batch.length;
    batch = [];
    size = 0;
    if (onProgress) onProgress({ done, sent: summary.sent.length, alreadyPresent: summary.alreadyPresent.length, failed: summary.failed.length });
  };
  for await (const bytes of part10s) {
    if (batch.length && size + bytes.length > batchBytes) await flush();
    batch.push({ bytes, uid: sopInstanceUid(bytes) });
    size += bytes.length;
  }
  await flush();
  return summary;
}
