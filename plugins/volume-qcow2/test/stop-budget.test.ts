import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { StopOptions } from '@cairn/qmp';
import { afterAll, describe, expect, it } from 'vitest';
import { Qcow2VolumeDriver } from '../src/index.js';
import type { DaemonSession } from '../src/daemon-session.js';
import { MiB, missingQemu, qemuImg, tempDir } from './helpers.js';
import { boundSessionsBy, runtimeOf, sessionOf, setSessionTimeout } from './stall.js';

// `close()` stops the daemon with `quit`, which closes the images still open and writes their
// persistent bitmaps; that gets its own budget (`stopTimeoutMs`), not the command timeout: a small
// `commandTimeoutMs` used to cut the quit to it (then SIGTERM and SIGKILL after as long again), and
// a daemon slow to quit was killed with its bitmaps left `in-use`. The daemon is set up with a
// generous bound on its commands (boundSessionsBy), then bound by COMMAND_MS (setSessionTimeout,
// as if started with `commandTimeoutMs: COMMAND_MS`) right before the stop.
const COMMAND_MS = 100;
/** How long the quit is kept waiting (the daemon frozen): twenty times what the old stop gave it before its SIGKILL. */
const FROZEN_MS = 20 * 2 * COMMAND_MS;
boundSessionsBy();
const dirs: string[] = [];

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** Records the options of every `stop` of the session's daemon (the real stop runs). */
function recordStops(session: DaemonSession): StopOptions[] {
  const seen: StopOptions[] = [];
  const stop = session.daemon.stop.bind(session.daemon);
  session.daemon.stop = (options = {}) => {
    seen.push(options);
    return stop(options);
  };
  return seen;
}

/** The flags of the image's persistent bitmaps, by name (`qemu-img info -U`: also while the daemon has it open). */
function bitmapFlags(path: string): Record<string, string[]> {
  const info = qemuImg(['info', '-U', '--output=json', path]);
  expect(info.status, info.stderr).toBe(0);
  const bitmaps = (JSON.parse(info.stdout) as { 'format-specific': { data: { bitmaps?: Array<{ name: string; flags: string[] }> } } })['format-specific'].data.bitmaps ?? [];
  return Object.fromEntries(bitmaps.map((b) => [b.name, b.flags]));
}

/** A driver with one volume that has a checkpoint and is open in the daemon (as a failed detach leaves it). */
async function volumeOpenAtClose(options: { stopTimeoutMs?: number } = {}): Promise<{ d: Qcow2VolumeDriver; session: DaemonSession; image: string }> {
  const directory = await tempDir();
  dirs.push(directory);
  const d = new Qcow2VolumeDriver({ directory, commandTimeoutMs: COMMAND_MS, ...options });
  const v = await d.createVolume({ size: 8 * MiB });
  await d.changedBlockTracking.createCheckpoint(v.id);
  const runtime = runtimeOf(d);
  await runtime.locks.run(v.id, () => runtime.openVolume(v.id)); // never released: open at the quit
  const session = await sessionOf(d);
  setSessionTimeout(session, COMMAND_MS);
  return { d, session, image: join(directory, 'volumes', `${v.id}.qcow2`) };
}

describe.skipIf(missingQemu.length > 0)(`the daemon's stop budget (needs ${missingQemu.join(', ') || 'qemu'})`, () => {
  it('a small commandTimeoutMs does not cut the quit short: a daemon that answers the quit late still exits cleanly and writes its bitmaps', async () => {
    const { d, session, image } = await volumeOpenAtClose();
    const stops = recordStops(session);
    expect(Object.values(bitmapFlags(image))).toEqual([['in-use', 'auto']]); // open: qemu marked it in use
    session.daemon.signal('SIGSTOP'); // the quit waits, as behind a slow bitmap write
    const closing = d.close();
    closing.catch(() => undefined);
    try {
      await sleep(FROZEN_MS);
    } finally {
      session.daemon.signal('SIGCONT');
    }
    await closing;
    expect(session.daemon.exit).toEqual({ code: 0, signal: null }); // the quit, not a SIGKILL
    expect(Object.values(bitmapFlags(image))).toEqual([['auto']]); // stored, no longer in use
    expect(stops).toEqual([{ quitTimeoutMs: 30_000, termTimeoutMs: 3_000, killTimeoutMs: 5_000 }]); // the default stopTimeoutMs
  });

  it('stopTimeoutMs sets the budget, also when it is shorter than commandTimeoutMs', async () => {
    const { d, session } = await volumeOpenAtClose({ stopTimeoutMs: 45_000 });
    const stops = recordStops(session);
    await d.close();
    expect(stops).toEqual([{ quitTimeoutMs: 45_000, termTimeoutMs: 3_000, killTimeoutMs: 5_000 }]);
    expect(session.daemon.exit).toEqual({ code: 0, signal: null });

    const short = await volumeOpenAtClose({ stopTimeoutMs: 50 });
    setSessionTimeout(short.session, 60_000);
    const shortStops = recordStops(short.session);
    await short.d.close();
    expect(shortStops).toEqual([{ quitTimeoutMs: 50, termTimeoutMs: 50, killTimeoutMs: 50 }]);
  });
});
