import { open } from 'node:fs/promises';
import { CairnError } from '@cairn/core';
import { describe, expect, it } from 'vitest';
import { namingFullDisk } from '../src/no-space.js';

/**
 * Contract (no-space.ts): a full file system's error (ENOSPC, EDQUOT) — a system error, or an
 * `UNAVAILABLE` CairnError saying so — becomes `UNAVAILABLE` naming the file; a CairnError whose
 * thrower chose another code keeps it (and stays the very same error), whatever its causes say.
 * The ENOSPC is a real one: a write to /dev/full.
 */
const FILE = '/some/dir/volumes/x.img';

/** The error of a real write(2) that fails ENOSPC. */
async function realEnospc(): Promise<NodeJS.ErrnoException> {
  const fh = await open('/dev/full', 'w');
  try {
    await fh.write(Buffer.alloc(4096));
  } catch (err) {
    return err as NodeJS.ErrnoException;
  } finally {
    await fh.close();
  }
  throw new Error('a write to /dev/full succeeded');
}

const failWith = (err: unknown) => () => Promise.reject(err);

describe('namingFullDisk', () => {
  it('a system ENOSPC becomes UNAVAILABLE naming the file, the system error its cause', async () => {
    const enospc = await realEnospc();
    expect(enospc.code).toBe('ENOSPC');
    const err = await namingFullDisk(FILE, 'writing image', 'file', failWith(enospc)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', driver: 'file', details: { file: FILE, errno: 'ENOSPC' } });
    expect((err as Error).message).toContain(FILE);
    expect((err as Error).cause).toBe(enospc);
  });

  it('an UNAVAILABLE CairnError caused by ENOSPC is named, its details kept', async () => {
    const inner = new CairnError('UNAVAILABLE', 'no space for a volume of 5 bytes', { driver: 'file', cause: await realEnospc(), details: { size: 5 } });
    const err = await namingFullDisk(FILE, 'growing image', 'file', failWith(inner)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNAVAILABLE', details: { file: FILE, errno: 'ENOSPC', size: 5 } });
    expect((err as Error).cause).toBe(inner);
  });

  it('a CairnError of another code keeps its code although ENOSPC is among its causes', async () => {
    const enospc = await realEnospc();
    for (const code of ['INVALID_INPUT', 'CORRUPT', 'BUSY', 'CANCELLED', 'CONFLICT', 'INTERNAL'] as const) {
      // two levels down, as a wrapper of a wrapper would have it
      const middle = new Error('the copy stopped', { cause: enospc });
      const inner = new CairnError(code, `failed for a reason of its own (${code})`, { driver: 'file', cause: middle });
      const err = await namingFullDisk(FILE, 'writing image', 'file', failWith(inner)).catch((e: unknown) => e);
      expect(err).toBe(inner);
      expect(err).toMatchObject({ code });
    }
  });

  it('an error that names its file already, and one that is no full disk, pass unchanged', async () => {
    const named = new CairnError('UNAVAILABLE', 'making directory /x: no space', { driver: 'file', cause: await realEnospc(), details: { file: '/x', errno: 'ENOSPC' } });
    expect(await namingFullDisk(FILE, 'writing sidecar', 'file', failWith(named)).catch((e: unknown) => e)).toBe(named);
    const eio = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
    expect(await namingFullDisk(FILE, 'writing image', 'file', failWith(eio)).catch((e: unknown) => e)).toBe(eio);
  });
});
