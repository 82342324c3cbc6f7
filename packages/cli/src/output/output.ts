import { isCairnError, toCairnError } from '@cairn/core';
import { cutLongRuns } from './echo.js';
import { hintFor } from './error-hints.js';
import { writeStdout } from './stdout.js';
import { shownLines, shownMessage } from './terminal-text.js';

/** Where a command's results go: JSON or human text on stdout, messages on stderr. */
export interface OutputOptions {
  /** Print results as one JSON document on stdout. Default false (human text). */
  json?: boolean;
  /** Suppress progress and informational messages on stderr. Default false. */
  quiet?: boolean;
}

export class Output {
  constructor(readonly options: OutputOptions) {}

  get json(): boolean {
    return !!this.options.json;
  }

  /**
   * Prints a command's result: `value` as JSON, or `human()` as text. The text's echoed parts (ids,
   * names, metadata, paths) must go through shownText (tables and fields do: table.ts); the whole
   * goes through shownLines, so no control character other than its line feeds reaches stdout.
   */
  result(value: unknown, human: () => string): void {
    // A failed write (EPIPE, ENOSPC) is reported once the command is done (reportStdoutFailure).
    writeStdout(this.json ? `${JSON.stringify(value, null, 2)}\n` : `${shownLines(human())}\n`);
  }

  /**
   * An informational line on stderr (never data). Suppressed by `--quiet`. Like every message
   * here (notice, warn, error's text), shown through shownMessage: echoed text cannot start a line
   * or move the cursor.
   */
  info(message: string): void {
    if (!this.options.quiet) process.stderr.write(`${shownMessage(message)}\n`);
  }

  /**
   * A line on stderr that qualifies the result without being data (a listing cut short: where its
   * next page starts), printed even with `--quiet`, which silences only progress and chatter: a
   * script that pages with `--quiet` needs it as much as a person does.
   */
  notice(message: string): void {
    process.stderr.write(`${shownMessage(message)}\n`);
  }

  /** A warning on stderr, printed even with `--quiet`. */
  warn(message: string): void {
    process.stderr.write(`warning: ${shownMessage(message)}\n`);
  }

  /**
   * Prints an error on stderr: `error [CODE]: message`, or with `--json` the document
   * `{"error":{"code","message","details"}}`. Causes are never printed (they may hold paths of
   * secret files); `CAIRN_DEBUG=1` prints the stack. An error whose remedy is the operator's (a
   * full file system: error-hints.ts) adds a `hint: …` line, or `error.hint` with `--json`. The
   * message echoes user text bounded (cutLongRuns: a run of more than MAX_ECHO non-blank
   * characters, such as a 100 KB id, is cut, its length noted); `details` stay whole, for scripts.
   * In text mode the message goes through shownMessage (control characters, line separators and
   * bidi overrides an echoed id may hold are escaped); the JSON document holds it unescaped.
   */
  error(err: unknown): void {
    const e = toCairnError(err);
    const message = cutLongRuns(e.message);
    const hint = hintFor(err);
    if (this.json) {
      process.stderr.write(`${JSON.stringify({ error: { code: e.code, message, details: e.details ?? {}, ...(hint ? { hint } : {}) } })}\n`);
    } else {
      process.stderr.write(`error [${e.code}]: ${shownMessage(message)}\n`);
      if (hint) process.stderr.write(`hint: ${hint}\n`);
    }
    // The stack repeats the message: escaped as it is (shownMessage), its frames on their own lines.
    if (process.env.CAIRN_DEBUG && !isCairnError(err)) process.stderr.write(`${shownMessage((err as Error)?.stack ?? String(err))}\n`);
    else if (process.env.CAIRN_DEBUG) process.stderr.write(`${shownMessage(e.stack ?? '')}\n`);
  }
}
