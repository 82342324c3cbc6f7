import { randomUUID } from 'node:crypto';

let lastMs = 0;

/**
 * Current time as ISO-8601, strictly increasing within the process (a tie or a clock step back
 * advances by 1 ms), so records ordered by creation time never tie.
 */
export function nowIso(): string {
  const ms = Math.max(Date.now(), lastMs + 1);
  lastMs = ms;
  return new Date(ms).toISOString();
}

/** A new random id (UUID v4). */
export const newId = (): string => randomUUID();
