import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attachConflicts, runCase } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';

/**
 * A self-test of the conformance suite's attach-conflict cases: a file driver whose refused
 * attach leaks a hold on the image's lock (a bug the cases must catch) passes every check of
 * the holding instance, so only a second instance can see it. `releaseLeaked` drops the holds it
 * leaked, closing the lock's file handle (else left for garbage collection to close, DEP0137).
 */
function leaky(directory: string): { driver: FileVolumeDriver; releaseLeaked(): Promise<void> } {
  const d = new FileVolumeDriver({ directory });
  const inner = d as unknown as {
    assertNoConflict(id: string, mode: 'ro' | 'rw'): void;
    ctx: { locks: { hold(path: string, mode: string): Promise<() => Promise<void>> }; store: { layout: { image(kind: string, id: string): string } } };
  };
  const leaked: Promise<(() => Promise<void>) | undefined>[] = [];
  const check = inner.assertNoConflict.bind(d);
  inner.assertNoConflict = (id, mode) => {
    try {
      check(id, mode);
    } catch (err) {
      leaked.push(inner.ctx.locks.hold(inner.ctx.store.layout.image('volume', id), mode === 'rw' ? 'exclusive' : 'shared').catch(() => undefined));
      throw err;
    }
  };
  return {
    driver: d,
    releaseLeaked: async () => {
      for (const release of await Promise.all(leaked)) await release?.();
    },
  };
}

describe('the attach-conflict cases', () => {
  it('catch a refused attach that leaves the image locked, through the suite peer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-conflict-leak-'));
    try {
      const bug = leaky(dir);
      const hooks = { setup: async () => ({ driver: bug.driver, peer: new FileVolumeDriver({ directory: dir }), volumeSize: 4 * 1024 * 1024 }), teardown: () => bug.releaseLeaked() };
      const { cases } = attachConflicts(new FileVolumeDriver({ directory: dir }).capabilities);
      const c = cases.find((x) => x.name.startsWith('a refused attach changes nothing'))!;
      await expect(runCase(c, hooks)).rejects.toMatchObject({ code: 'BUSY' });
      // The teardown let go of the leaked lock: another instance writes every volume again.
      const after = new FileVolumeDriver({ directory: dir });
      for (const v of await after.listVolumes()) await after.detach((await after.attach({ kind: 'volume', id: v.id }, 'rw')).id);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
