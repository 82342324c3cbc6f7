import { shownMessage } from './terminal-text.js';

/**
 * The stderr line(s) for an error no command handled (a bug reached the binary's entry point):
 * `error [INTERNAL]: ` and the error's stack (or the value as text), shown as shownMessage shows a
 * message: the stack's frames stay on their indented lines, while any other line feed and every
 * terminal control an echoed text may carry (ESC, bidi overrides…) is escaped. Ends with a line feed.
 */
export function internalErrorText(err: unknown): string {
  const stack = (err as Error | undefined)?.stack;
  return `error [INTERNAL]: ${shownMessage(typeof stack === 'string' ? stack : String(err))}\n`;
}
