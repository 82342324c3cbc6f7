import { cutText } from '@cairn/core';

/**
 * Bounds what an error message echoes of text a user supplied (an id or name on the command line,
 * a key or value in a config): 100 KB of it would bury the message.
 */

/** Longest run of non-blank characters (code points) a message shows whole. Longer than any id (200), name (255) or `key=value` pair of them; a path longer than this is shown cut too. */
export const MAX_ECHO = 512;

/**
 * `text` with every run of non-blank characters longer than `max` code points cut to its first
 * `max`, followed by `… (<n> characters)` giving the run's whole length. Text without such a run
 * is returned unchanged.
 */
export function cutLongRuns(text: string, max: number = MAX_ECHO): string {
  return text.replace(new RegExp(`\\S{${max + 1},}`, 'gu'), (run) => cutText(run, max));
}
