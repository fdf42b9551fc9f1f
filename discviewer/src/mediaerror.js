/**
 * The one error the disc viewer's crypto modules raise (re-exported by secure.js).
 *
 * `code` is one of 'wrong-key' | 'tampered' | 'truncated' | 'unsupported-recipient' |
 * 'unsupported-algorithm' | 'malformed' | 'unprotected'; `message` is one plain sentence
 * the page can show as it is (never a password, never a stack).
 */

export const CODES = Object.freeze(['wrong-key', 'tampered', 'truncated', 'unsupported-recipient',
  'unsupported-algorithm', 'malformed', 'unprotected']);

export class MediaError extends Error {
  /**
   * @param {string} code one of CODES
   * @param {string} message one sentence for a person
   */
  constructor(code, message) {
    if (!CODES.includes(code)) throw new TypeError(`unknown MediaError code ${code}`);
    super(message);
    this.name = 'MediaError';
    this.code = code;
  }
}

/** Run `fn`; turn an Asn1Error into a MediaError (same code), prefixed by `what`. */
export function asn1Guard(fn, what) {
  try {
    return fn();
  } catch (err) {
    if (err && err.name === 'Asn1Error') {
      const code = err.code === 'truncated' ? 'truncated' : 'malformed';
      const text = code === 'truncated' ? `${what} is truncated (${err.message})`
        : `${what} is damaged (${err.message})`;
      throw new MediaError(code, text);
    }
    throw err;
  }
}
