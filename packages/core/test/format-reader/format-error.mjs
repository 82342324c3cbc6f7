// The reader's one error type. Codes follow docs/repository-format.md (CORRUPT, NOT_FOUND,
// NOT_SUPPORTED, INVALID_INPUT); the reader shares no code with Cairn, so it has its own class.
export class FormatError extends Error {
  /**
   * @param {'CORRUPT'|'NOT_FOUND'|'NOT_SUPPORTED'|'INVALID_INPUT'} code
   * @param {string} message
   * @param {unknown} [cause]
   */
  constructor(code, message, cause) {
    super(`[format-reader] ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'FormatError';
    this.code = code;
  }
}
