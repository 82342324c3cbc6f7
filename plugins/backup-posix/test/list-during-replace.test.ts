/**
 * list while objects are replaced: an object that is there for the whole listing is listed, once,
 * even while a put replaces it (rename over it). The repository relies on that: a lock check lists
 * `locks/` while other holders refresh their lock objects by replacing them, and a catalog listing
 * runs while records are updated. readdir(2) promises nothing for entries changed while it runs;
 * tmpfs gives a replacing entry a freed position the read may have passed, so one read of a large
 * directory misses objects replaced meanwhile. A real tmpfs, mounted when we may (root).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PosixObjectStore } from '../src/index.js';
import { collect } from './helpers.js';

/** More objects than one getdents(2) returns, so that a read of the directory takes several. */
const COUNT = 3000;
const KEYS = Array.from({ length: COUNT }, (_, i) => `records/r${String(i).padStart(5, '0')}`);
const LISTS = 10;

describe('list while objects are replaced (tmpfs)', () => {
  let dir: string | undefined;
  beforeAll(() => {
    const mountpoint = mkdtempSync(join(tmpdir(), 'cairn-posix-listrace-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', mountpoint], { stdio: 'pipe' });
      dir = mountpoint;
    } catch (err) {
      rmdirSync(mountpoint);
      console.warn(`list-during-replace skipped: cannot mount a tmpfs (${String((err as Error).message).split('\n')[0]})`);
    }
  });
  afterAll(() => {
    if (!dir) return;
    execFileSync('umount', [dir]);
    rmdirSync(dir);
  });

  it(`each of ${LISTS} lists of ${COUNT} objects, while a writer replaces them one after another, yields every key exactly once`, async (ctx) => {
    if (!dir) return ctx.skip();
    const store = await PosixObjectStore.open({ directory: dir, createDirectory: false, reserveBytes: 0 });
    for (const key of KEYS) await store.put(key, Buffer.from('v1'));
    let stop = false;
    let replaced = 0;
    // One writer, going round the keys: no key is replaced twice within one list.
    const replacing = (async () => {
      for (let i = 0; !stop; i = (i + 1) % COUNT) {
        await store.put(KEYS[i]!, Buffer.from(`v${replaced}`));
        replaced++;
      }
    })();
    try {
      for (let n = 0; n < LISTS; n++) {
        const keys = (await collect(store.list('records/'))).map((o) => o.key).sort();
        const missing = KEYS.filter((k) => !keys.includes(k));
        expect(missing, `list ${n}: keys missing (${replaced} replaced so far)`).toEqual([]);
        expect(keys, `list ${n}`).toEqual(KEYS);
      }
    } finally {
      stop = true;
      await replacing;
    }
    expect(replaced).toBeGreaterThan(0);
  });
});
