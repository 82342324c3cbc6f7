// An events() iterator asked for several values at once (next() called again before the earlier
// promise settled, which the async iterator protocol allows: Promise.all, a reader per slot)
// must settle every promise, in call order, with the events in wire order, and settle the ones
// still waiting when the client closes. Real events: BLOCK_EXPORT_DELETED from a daemon.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QemuStorageDaemon, type QmpEvent } from '../src/index.js';
import { removeDir, tempDir } from './helpers.js';

let dir: string;
let daemon: QemuStorageDaemon;

beforeAll(async () => {
  dir = await tempDir();
  daemon = await QemuStorageDaemon.start();
  await daemon.qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'n0', size: 1 << 20 });
  await daemon.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: join(dir, 'nbd.sock') } } });
});

afterAll(async () => {
  await daemon?.stop();
  await removeDir(dir);
});

/** Adds and deletes an export `id`; qemu emits BLOCK_EXPORT_DELETED for it. */
async function cycle(id: string): Promise<void> {
  await daemon.qmp.execute('block-export-add', { type: 'nbd', id, 'node-name': 'n0', name: id });
  await daemon.qmp.execute('block-export-del', { id });
}

const idOf = (r: IteratorResult<QmpEvent> | 'pending'): unknown => (r === 'pending' ? r : r.done ? 'done' : (r.value as QmpEvent<'BLOCK_EXPORT_DELETED'>).data.id);

/** What `p` came to within `ms`: its value, or 'pending'. */
const within = <T>(p: Promise<T>, ms: number): Promise<T | 'pending'> => Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);

describe('events() with next() called again before the earlier one settled', () => {
  it('every promise settles, in call order, with the events in wire order', async () => {
    const events = daemon.qmp.events({ names: ['BLOCK_EXPORT_DELETED'] });
    const first = events.next();
    const second = events.next();
    await cycle('e1');
    await cycle('e2');
    expect(idOf(await within(first, 20_000))).toBe('e1');
    expect(idOf(await within(second, 20_000))).toBe('e2');
    await events.return!();
  });

  it('promises still waiting settle as done when the iterator is returned', async () => {
    const events = daemon.qmp.events({ names: ['BLOCK_EXPORT_DELETED'] });
    const a = events.next();
    const b = events.next();
    await events.return!();
    expect(await within(a, 20_000)).toEqual({ value: undefined, done: true });
    expect(await within(b, 20_000)).toEqual({ value: undefined, done: true });
  });
});
