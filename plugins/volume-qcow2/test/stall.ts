import type { Qcow2VolumeDriver } from '../src/index.js';
import type { DaemonSession } from '../src/daemon-session.js';
import type { Runtime } from '../src/runtime.js';

// Helpers for tests that make the daemon miss a QMP reply: it is frozen with SIGSTOP just before
// one command is sent, and thawed with SIGCONT after the call failed; qemu then runs what it was
// sent, in order, before anything sent later.

/** The driver's running daemon session (the driver must have started one). */
export const sessionOf = async (d: Qcow2VolumeDriver): Promise<DaemonSession> => (await (d as unknown as { runtime: Runtime }).runtime.running())!;

/** The driver's runtime (its per-volume locks). */
export const runtimeOf = (d: Qcow2VolumeDriver): Runtime => (d as unknown as { runtime: Runtime }).runtime;

/**
 * Runs `call` with the daemon frozen (SIGSTOP) just before the first QMP `command` is sent, and
 * thaws it (SIGCONT) once `call` settled. Returns the error code `call` failed with ('resolved' if none).
 */
export async function stalledAt(session: DaemonSession, command: string, call: () => Promise<unknown>): Promise<string> {
  const qmp = session.qmp;
  const execute = qmp.execute.bind(qmp) as (c: string, ...rest: unknown[]) => Promise<unknown>;
  let stopped = false;
  (qmp as unknown as { execute: typeof execute }).execute = (c, ...rest) => {
    if (c === command && !stopped) {
      stopped = true;
      session.daemon.signal('SIGSTOP');
    }
    return execute(c, ...rest);
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
