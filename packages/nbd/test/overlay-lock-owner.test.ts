// The CONFLICT of an overlay held by another process names the holder's host as its lock file
// says: text anything may have written, so it is quoted, cut to 64 characters and its control
// characters escaped (core's quotedCut). The lock file here names a process on another machine
// (another machine id and pid namespace), which counts as alive; it is left as it was.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> };
beforeAll(async () => {
  dir = await tempDir('nbd-lock-owner-');
});
afterAll(() => dir?.remove());

describe('the holder named in an overlay lock CONFLICT', () => {
  it('a host with a line feed and ESC, 322 characters long: quoted, escaped, cut at 64 with its length', async () => {
    const p = join(dir.path, 'held.img');
    const host = `a\nerror [OK]: fake\x1b[2J${'h'.repeat(300)}`; // 22 + 300 characters
    const lock = JSON.stringify({ owner: { host, pid: 1, machineId: 'f'.repeat(32), pidNamespace: 1 } });
    await writeFile(`${p}.lock`, lock);
    const err = await OverlayFile.open(p, { backupId: 'b', size: 4096 }, async (_o, l) => Buffer.alloc(l)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: 'CONFLICT',
      message: `[backup-export] overlay ${p} is in use by process 1 on "a\\nerror [OK]: fake\\u001b[2J${'h'.repeat(42)}"… (322 characters)`,
    });
    expect(await readFile(`${p}.lock`, 'utf8')).toBe(lock);
  });

  it('a lock file larger than a lock file can be (64 KiB) is not read whole: the overlay is in use, its lock file unreadable, and left as it was', async () => {
    const p = join(dir.path, 'big.img');
    const lock = JSON.stringify({ owner: { host: 'h', pid: 1, machineId: 'f'.repeat(32), pidNamespace: 1 }, pad: 'x'.repeat(80 * 1024) });
    await writeFile(`${p}.lock`, lock);
    const err = await OverlayFile.open(p, { backupId: 'b', size: 4096 }, async (_o, l) => Buffer.alloc(l)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'CONFLICT', message: `[backup-export] overlay ${p} is in use (its lock file is unreadable)` });
    expect(await readFile(`${p}.lock`, 'utf8')).toBe(lock);
  });
});
