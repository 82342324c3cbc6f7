import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attachConflicts, runCase } from '@cairn/conformance';
import { FileVolumeDriver } from '../src/index.js';

/**
 * A self-test of the conformance suite's attach-conflict cases: a file driver whose refused
 * attach leaks a hold on the image's lock (a bug the cases must catch) passes every check of
 * the holding instance, so only a second instance can see it.
 */
function leaky(directory: string): FileVolumeDriver {
  const d = new FileVolumeDriver({ directory });
  const inner = d as unknown as {
    assertNoConflict(id: string, mode: 'ro' | 'rw'): void;
    ctx: { locks: { hold(path: string, mode: string): Promise<unknown> }; store: { layout: { image(kind: string, id: string): string } } };
  };
  const check = inner.assertNoConflict.bind(d);
  inner.assertNoConflict = (id, mode) => {
    try {
      check(id, mode);
    } catch (err) {
      void inner.ctx.locks.hold(inner.ctx.store.layout.image('volume', id), mode === 'rw' ? 'exclusive' : 'shared').catch(() => {});
      throw err;
    }
  };
  return d;
}

describe('the attach-conflict cases', () => {
  it('catch a refused attach that leaves the image locked, through the suite peer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cairn-conflict-leak-'));
    try {
      const hooks = { setup: async () => ({ driver: leaky(dir), peer: new FileVolumeDriver({ directory: dir }), volumeSize: 4 * 1024 * 1024 }), teardown: async () => {} };
      const { cases } = attachConflicts(new FileVolumeDriver({ directory: dir }).capabilities);
      const c = cases.find((x) => x.name.startsWith('a refused attach changes nothing'))!;
      await expect(runCase(c, hooks)).rejects.toMatchObject({ code: 'BUSY' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
