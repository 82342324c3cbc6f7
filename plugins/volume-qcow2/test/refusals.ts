import { join } from 'node:path';
import { expect } from 'vitest';
import type { Qcow2VolumeDriver } from '../src/index.js';
import type { DaemonSession } from '../src/daemon-session.js';
import { MiB } from './helpers.js';
import { sessionOf } from './stall.js';

// Helpers for tests where qemu refuses a step: an export Cairn did not make (an "intruder") on a
// node keeps qemu from deleting that node (CONFLICT) until the export is gone.

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A bound for `becomes` where it only tells "never" from "settled" (the real daemon's work, a
 * retry due a few hundred ms on): far past anything a loaded machine takes.
 */
export const SETTLED_MS = 20_000;

/** Polls `check` every 25 ms for up to `ms`; whether it became true. */
export async function becomes(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(25)) if (await check()) return true;
  return check();
}

export const imageOf = (d: Qcow2VolumeDriver, volumeId: string): string => join(d.directory, 'volumes', `${volumeId}.qcow2`);

/** Names of the nodes qemu has (without its automatic `#block…` ones). */
export async function qemuNodes(session: DaemonSession): Promise<string[]> {
  return (await session.qmp.execute('query-named-block-nodes', { flat: true })).flatMap((n) => n['node-name'] ?? []).filter((n) => !n.startsWith('#'));
}

/**
 * Exports `node` (default: the view's overlay node) under the id `id` (default `intruder`), so qemu
 * refuses to delete the node.
 */
export async function addIntruder(session: DaemonSession, node?: string, id = 'intruder'): Promise<void> {
  const target = node ?? (await qemuNodes(session)).find((n) => /^ov\d+$/.test(n));
  expect(target, 'the node to export exists').toBeDefined();
  await session.qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': target!, name: id, writable: false });
}

/** A volume attached read-only with a view: the view's teardown is what the cases disturb. */
export async function volumeWithView(d: Qcow2VolumeDriver): Promise<{ volumeId: string; readerId: string; snapshotId: string; session: DaemonSession }> {
  const v = await d.createVolume({ size: 8 * MiB });
  await d.changedBlockTracking.createCheckpoint(v.id);
  const a = await d.attach({ kind: 'volume', id: v.id }, 'ro');
  const snap = await d.createSnapshot(v.id, 'view');
  return { volumeId: v.id, readerId: a.id, snapshotId: snap.id, session: await sessionOf(d) };
}

/** SIGKILLs the session's daemon and waits until the driver has seen it die. */
export async function killDaemon(d: Qcow2VolumeDriver, session: DaemonSession): Promise<void> {
  session.daemon.signal('SIGKILL');
  expect(await becomes(async () => !session.alive && (await d.daemonPid()) === undefined, 5000), 'the daemon died').toBe(true);
  await session.daemon.whenExited;
}
