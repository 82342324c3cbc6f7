/**
 * writeFileAtomic and writeNewFileDurably: on any failure the temporary file they created is
 * removed and the caller gets the error that made the write fail. close(2) can fail too (NFS
 * reports write-back errors such as ENOSPC or EDQUOT again when the file is closed), so the
 * failures are injected into the sync and close of the handles node:fs/promises opens.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { writeFileAtomic, writeNewFileDurably } from '../src/util/durable-file.js';

/** Failures to inject: the next call of that FileHandle method (on any handle opened from now) fails with the errno. */
const inject = vi.hoisted(() => ({ next: new Map<'sync' | 'close', string>() }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const open = async (...args: Parameters<typeof real.open>): Promise<FileHandle> => {
    const fh = await real.open(...args);
    for (const name of ['sync', 'close'] as const) {
      const original = fh[name].bind(fh);
      // The call itself happens (a close does close the descriptor); then it reports the failure.
      Object.defineProperty(fh, name, {
        configurable: true,
        value: async () => {
          await original();
          const code = inject.next.get(name);
          if (code === undefined) return;
          inject.next.delete(name);
          throw Object.assign(new Error(`${code}: injected ${name} failure`), { code, syscall: name });
        },
      });
    }
    return fh;
  };
  return { ...real, open, default: { ...real, open } };
});

describe('durable-file failures leave no temporary file', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-durable-file-'));
  });
  afterEach(async () => {
    inject.next.clear();
    await rm(dir, { recursive: true, force: true });
  });

  it('writeFileAtomic whose fsync fails, and whose close then fails too, throws the fsync error, removes its temporary file and keeps the old content', async () => {
    const path = join(dir, 'record.json');
    await writeFile(path, 'old');
    inject.next.set('sync', 'ENOSPC').set('close', 'EIO');
    await expect(writeFileAtomic(path, 'new')).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(await readdir(dir)).toEqual(['record.json']);
    expect(await readFile(path, 'utf8')).toBe('old');
  });

  it('writeFileAtomic whose close fails after a good fsync throws, removes its temporary file and keeps the old content', async () => {
    const path = join(dir, 'record.json');
    await writeFile(path, 'old');
    inject.next.set('close', 'EDQUOT');
    await expect(writeFileAtomic(path, 'new')).rejects.toMatchObject({ code: 'EDQUOT' });
    expect(await readdir(dir)).toEqual(['record.json']);
    expect(await readFile(path, 'utf8')).toBe('old');
  });

  it('writeNewFileDurably whose close fails removes the file it created', async () => {
    inject.next.set('close', 'EIO');
    await expect(writeNewFileDurably(join(dir, 'new'), 'data')).rejects.toMatchObject({ code: 'EIO' });
    expect(await readdir(dir)).toEqual([]);
  });

  it('writeFileAtomic replaces the content and leaves nothing beside it', async () => {
    const path = join(dir, 'record.json');
    await writeFileAtomic(path, 'one');
    await writeFileAtomic(path, Buffer.from('two'));
    expect(await readdir(dir)).toEqual(['record.json']);
    expect(await readFile(path, 'utf8')).toBe('two');
  });
});

/** Runs `fn` with the process umask set to `mask`, restored afterwards (test files run in their own process: pool forks). */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

describe('durable-file new files are 0600 whatever the umask', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cairn-durable-file-mode-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // 0277 takes the owner's write bit, 0377 the owner's read bit too (a file its owner could not
  // read back); 0 gives nothing beyond what was asked (the umask only takes bits away).
  for (const mask of [0o277, 0o377, 0o000]) {
    it(`under umask ${mask.toString(8).padStart(4, '0')} writeNewFileDurably and writeFileAtomic make files of mode 0600`, async () => {
      const created = join(dir, 'created');
      const replaced = join(dir, 'record.json');
      await writeFile(replaced, 'old', { mode: 0o644 });
      await withUmask(mask, async () => {
        await writeNewFileDurably(created, 'data');
        await writeFileAtomic(replaced, 'new');
      });
      expect(((await stat(created)).mode & 0o7777).toString(8)).toBe('600');
      expect(((await stat(replaced)).mode & 0o7777).toString(8)).toBe('600');
      expect(await readFile(replaced, 'utf8')).toBe('new');
    });
  }
});
