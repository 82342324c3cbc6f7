import { lstat, rm, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { FsyncProbe } from './fsync-probe.js';
import { allFiles, tempStore } from './helpers.js';

const KEY = `packs/${'6e'.repeat(32)}`;
const HOUR = 60 * 60_000;
const GC_MIN_AGE = 15 * 60_000; // the least age the repository's GC sweeps with

async function temps(store: PosixObjectStore): Promise<string[]> {
  return (await allFiles(store.directory)).filter((f) => f.includes('~tmp-')).map((f) => join(store.directory, f));
}

/**
 * A live writer that wrote nothing for an hour: its temporary file's mtime set an hour back (its
 * last write), then an hour of this process's interval timers run (fake setInterval: the writer's
 * own timers fire as they would over that hour); its file must be fresh again by then.
 */
async function idleForAnHour(temp: string): Promise<void> {
  const hourAgo = new Date(Date.now() - HOUR);
  await utimes(temp, hourAgo, hourAgo);
  vi.advanceTimersByTime(HOUR);
  await vi.waitFor(async () => expect(Date.now() - (await lstat(temp)).mtimeMs).toBeLessThan(GC_MIN_AGE), { timeout: 20_000 });
}

// sweepTemp judges a temporary file abandoned by its mtime: a live writer keeps it fresh however
// long it waits between writes, so a sweep never removes a file from under it.
describe('sweepTemp and live writers', () => {
  let store: PosixObjectStore;
  let probe: FsyncProbe | undefined;
  afterEach(async () => {
    vi.useRealTimers();
    probe?.restore();
    probe = undefined;
    await rm(store.directory, { recursive: true, force: true });
  });

  it('a part writer idle for an hour between appends keeps its temporary file through sweepTemp(15 min) and commits the whole object; its timer ends with the commit', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    store = await tempStore('live-parts');
    const w = await store.openWrite(KEY, { ifAbsent: true });
    await w.append(Buffer.from('first part, '));
    const [temp] = await temps(store);
    await idleForAnHour(temp!);
    expect(await store.sweepTemp(GC_MIN_AGE)).toBe(0);
    await w.append(Buffer.from('second part'));
    await w.commit();
    expect((await store.get(KEY)).toString()).toBe('first part, second part');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a put whose fsync of its temporary file stalls for an hour keeps the file through sweepTemp(15 min) and resolves with the object', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    store = await tempStore('live-put');
    probe = await FsyncProbe.install();
    const held = probe.hold((path) => path.includes('/~tmp-'));
    const put = store.put(KEY, Buffer.from('whole'));
    const temp = await held.reached;
    await idleForAnHour(temp);
    expect(await store.sweepTemp(GC_MIN_AGE)).toBe(0);
    held.release();
    await put;
    expect((await store.get(KEY)).toString()).toBe('whole');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an aborted part writer stops keeping its file fresh (and removes it); a dead writer\'s file is swept by age', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    store = await tempStore('dead-parts');
    const w = await store.openWrite(KEY);
    await w.append(Buffer.from('x'));
    await w.abort();
    expect(vi.getTimerCount()).toBe(0);
    expect(await temps(store)).toEqual([]);
    // What a writer killed mid-write leaves: nothing refreshes it.
    await store.put('seed', Buffer.from('s'));
    const left = join(store.directory, '~tmp-999999-0123456789abcdef01234567');
    await writeFile(left, 'partial');
    const hourAgo = new Date(Date.now() - HOUR);
    await utimes(left, hourAgo, hourAgo);
    vi.advanceTimersByTime(HOUR);
    expect(await store.sweepTemp(GC_MIN_AGE)).toBe(1);
  });
});
