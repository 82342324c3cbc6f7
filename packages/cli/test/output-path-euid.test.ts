import { chmod, chown, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkOutputLocation } from '../src/io/output-path.js';
import { removeDir } from './helpers.js';

const isRoot = process.getuid?.() === 0 && typeof process.seteuid === 'function';

/**
 * The sticky-directory rule of checkOutputLocation judges by the effective uid, as the kernel does
 * when the file is replaced: a process whose real uid is 0 but whose effective uid is another
 * user's (after seteuid, or setuid-root the other way round) may not replace a third user's file
 * in a sticky directory, and is told so before anything is written. Needs root, to change the
 * effective uid of this process (back again after each check: the real and saved uids stay 0).
 */
describe.skipIf(!isRoot)('checkOutputLocation in a sticky directory, by effective uid', () => {
  let base: string;
  let file: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'cairn-euid-'));
    await chmod(base, 0o755);
    const sticky = join(base, 'sticky');
    await mkdir(sticky);
    await chmod(sticky, 0o1777); // root's, as /tmp
    file = join(sticky, 'theirs.raw');
    await writeFile(file, 'a file of user 2000');
    await chown(file, 2000, 2000);
  });
  afterAll(() => removeDir(base));

  /** checkOutputLocation(file) run with effective uid `euid` (real uid 0). */
  async function checkAs(euid: number): Promise<unknown> {
    process.seteuid!(euid);
    try {
      return await checkOutputLocation(file).catch((err: unknown) => err);
    } finally {
      process.seteuid!(0);
    }
  }

  it("refuses another user's file (UNAVAILABLE, details.file) for effective uid 1000 though the real uid is 0", async () => {
    expect(process.getuid!()).toBe(0);
    expect(await checkAs(1000)).toMatchObject({ code: 'UNAVAILABLE', details: { file } });
  });

  it("lets the file's owner (effective uid 2000) and root (effective uid 0) replace it", async () => {
    expect(await checkAs(2000)).toBe(true);
    expect(await checkAs(0)).toBe(true);
  });
});
