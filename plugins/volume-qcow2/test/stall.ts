import { expect } from 'vitest';
import type { Qcow2VolumeDriver } from '../src/index.js';
import { DaemonSession } from '../src/daemon-session.js';
import type { Runtime } from '../src/runtime.js';

// Helpers for tests that make the daemon miss a QMP reply: it is frozen with SIGSTOP just before
// one command is sent, and thawed with SIGCONT after the call failed; qemu then runs what it was
// sent, in order, before anything sent later.

/** The driver's running daemon session (the driver must have started one). */
export const sessionOf = async (d: Qcow2VolumeDriver): Promise<DaemonSession> => (await (d as unknown as { runtime: Runtime }).runtime.running())!;

/** The driver's runtime (its per-volume locks). */
export const runtimeOf = (d: Qcow2VolumeDriver): Runtime => (d as unknown as { runtime: Runtime }).runtime;

/** How long a command sent to the frozen daemon waits for its reply (stalledAt): it never comes. */
export const STALL_MS = 250;

/**
 * Runs `call` with the daemon frozen (SIGSTOP) just before the first QMP `command` is sent, and
 * thaws it (SIGCONT) once `call` settled. Every command sent while the daemon is frozen (that one
 * and any `call` sends after it) times out after `stallMs`; the others keep the session's own
 * timeout. Returns the error code `call` failed with ('resolved' if none).
 */
export async function stalledAt(session: DaemonSession, command: string, call: () => Promise<unknown>, stallMs = STALL_MS): Promise<string> {
  const qmp = session.qmp;
  const execute = qmp.execute.bind(qmp) as (c: string, args?: unknown, options?: object) => Promise<unknown>;
  let stopped = false;
  (qmp as unknown as { execute: typeof execute }).execute = (c, args, options) => {
    if (c === command && !stopped) {
      stopped = true;
      session.daemon.signal('SIGSTOP');
    }
    return stopped ? execute(c, args, { ...options, timeoutMs: stallMs }) : execute(c, args, options);
  };
  try {
    return await call().then(
      () => 'resolved',
      (e: { code?: string }) => String(e.code),
    );
  } finally {
    delete (qmp as unknown as { execute?: unknown }).execute; // back to the prototype's
    if (stopped) session.daemon.signal('SIGCONT');
  }
}

/**
 * A bound for the real daemon's work in tests (commands, events, NBD connects, stops): long enough
 * that a loaded machine (an fsync on a busy disk, qemu not scheduled) never reaches it.
 */
export const GENEROUS_MS = 30_000;

/**
 * From this call on, in this test file, every daemon session a driver starts bounds its QMP
 * commands, events, NBD steps and abandon by `ms` (GENEROUS_MS) instead of the driver's
 * `commandTimeoutMs`, which then only spaces the retries of deferred cleanup (DeferredRetry). For
 * tests that need retries a few hundred ms apart: with that as the bound of every command, an
 * image open or close that fsyncs on a busy disk failed them by chance. A command the test
 * freezes on purpose gets a short bound from stalledAt.
 */
export function boundSessionsBy(ms = GENEROUS_MS): void {
  const start = DaemonSession.start.bind(DaemonSession);
  DaemonSession.start = (options) => start({ ...options, commandTimeoutMs: ms });
}

/**
 * Bounds a running session's waits by `ms` from now on, as if it had been started with
 * `commandTimeoutMs: ms`: QMP commands, events, NBD connects and disconnects and its abandon by
 * `ms` (its clean stop has a budget of its own: `stopTimeoutMs`), NBD requests (of later
 * connections and of `devices`, already connected) by its I/O timeout. For
 * tests of a stalled daemon that set up under boundSessionsBy, then stall it with a short bound.
 * Fails if a field it sets is not there.
 */
export function setSessionTimeout(session: DaemonSession, ms: number, devices: Array<{ device: unknown }> = []): void {
  const set = (target: object, field: string, value: number): void => {
    expect(field in target, `${target.constructor.name} has ${field}`).toBe(true);
    (target as Record<string, number>)[field] = value;
  };
  set(session, 'timeoutMs', ms);
  set(session.qmp, 'commandTimeoutMs', ms);
  for (const { device } of devices) {
    const client = (device as { client: { cancelCheck?: () => void } }).client;
    set(client, 'requestTimeoutMs', session.ioTimeoutMs);
    expect('cancelCheck' in client, 'NbdClient has cancelCheck').toBe(true);
    client.cancelCheck?.(); // a check armed with the old bound (it stays armed after the last reply)
    client.cancelCheck = undefined; // the next request arms one with the new bound
  }
}

/** What qemu holds besides the volume nodes: jobs, exports, non-persistent bitmaps and overlay nodes. */
export async function leftovers(session: DaemonSession): Promise<string[]> {
  const jobs = (await session.qmp.execute('query-block-jobs')).map((j) => `job ${j.device}`);
  const exports = (await session.qmp.execute('query-block-exports')).map((e) => `export ${e.id}`);
  const nodes = await session.qmp.execute('query-named-block-nodes', { flat: true });
  const named = nodes.flatMap((n) => n['node-name'] ?? []).filter((n) => !n.startsWith('#') && !/^r[ow]\d+$/.test(n)).map((n) => `node ${n}`);
  const bitmaps = nodes.flatMap((n) => (n['dirty-bitmaps'] ?? []).filter((b) => !b.persistent).map((b) => `bitmap ${b.name}`));
  return [...jobs, ...exports, ...named, ...bitmaps].sort();
}

/** The export name of an attachment (its NBD client's). */
export function exportOf(attachment: { device: unknown }): string {
  return (attachment.device as { client: { exportName: string } }).client.exportName;
}
