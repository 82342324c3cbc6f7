/**
 * A store directory on a file system without hard links (vfat, exFAT, some SMB and FUSE mounts):
 * link(2) fails there (EPERM on vfat, EOPNOTSUPP or ENOSYS elsewhere). Only-if-absent puts publish
 * by link, so they cannot work there at all: NOT_SUPPORTED, saying why, rather than UNAVAILABLE,
 * which tells a caller to retry. Plain puts (rename) work as before. No such file system can be
 * mounted in this test's container, so link(2) is made to fail as vfat's does.
 */
import { readdir, rm } from 'node:fs/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { PosixObjectStore } from '../src/index.js';
import { tempStore } from './helpers.js';

const failLink = vi.hoisted(() => ({ code: undefined as string | undefined }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const link = async (...args: Parameters<typeof real.link>): Promise<void> => {
    if (failLink.code) throw Object.assign(new Error(`${failLink.code}: operation not permitted, link`), { code: failLink.code, syscall: 'link' });
    return real.link(...args);
  };
  return { ...real, link, default: { ...real, link } };
});

describe('a store on a file system without hard links', () => {
  let store: PosixObjectStore;
  afterEach(async () => {
    failLink.code = undefined;
    await rm(store.directory, { recursive: true, force: true });
  });

  for (const code of ['EPERM', 'EOPNOTSUPP', 'ENOSYS']) {
    it(`an only-if-absent put where link says ${code} is NOT_SUPPORTED, leaves no file, and plain puts still work`, async () => {
      store = await tempStore('nolinks');
      failLink.code = code;
      const err = await store.put('config', Buffer.from('{}'), { ifAbsent: true }).then(() => undefined, (e: unknown) => e);
      expect(err).toMatchObject({ code: 'NOT_SUPPORTED', driver: 'posix', message: expect.stringContaining('hard links') });
      expect((await readdir(store.directory)).filter((n) => !n.startsWith('.'))).not.toContain('config');
      await store.put('config', Buffer.from('{"a":1}'));
      expect((await store.get('config')).toString()).toBe('{"a":1}');
    });
  }
});
