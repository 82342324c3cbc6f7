import { hostname } from 'node:os';

/** Who is doing something: a process on a host. */
export interface ProcessOwner {
  host: string;
  pid: number;
}

/** This process. */
export function currentOwner(): ProcessOwner {
  return { host: hostname(), pid: process.pid };
}

/**
 * Whether `owner` may still be running: always true for another host (it cannot be checked from
 * here), else whether the pid exists (EPERM means it exists under another user).
 */
export function ownerMayBeAlive(owner: ProcessOwner): boolean {
  if (owner.host !== hostname()) return true;
  if (owner.pid === process.pid) return true;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
