import { chmod, lchown, lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isCairnError } from '@cairn/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outputPath } from '../src/io/output-path.js';
import { removeDir, tempDir } from './helpers.js';

const me = process.getuid!();
/** A user other than this process's, who owns the planted link (as another user of a shared /tmp would). */
const stranger = me === 0 ? 4242 : undefined;

/**
 * In a sticky world-writable directory (/tmp) anyone may plant a symbolic link under a name
 * another user is about to write (`backup export-record -o /tmp/rec.json` replaces without
 * --force). Linux refuses to follow such a link for anyone but its owner (fs.protected_symlinks),
 * but outputPath resolves links itself and would write through to whatever the link names.
 */
describe.skipIf(stranger === undefined)('outputPath and a link planted by another user in a sticky directory', () => {
  let dir: string;
  let shared: string;
  let victim: string;

  beforeAll(async () => {
    dir = await tempDir();
    shared = join(dir, 'tmp');
    await mkdir(shared);
    await chmod(shared, 0o1777);
    victim = join(dir, 'authorized_keys');
    await writeFile(victim, 'ssh-ed25519 AAAA me\n');
  });
  afterAll(() => removeDir(dir));

  it('refuses (UNAVAILABLE, details.file) to write through it, with or without --force', async () => {
    const link = join(shared, 'rec.json');
    await symlink(victim, link);
    await lchown(link, stranger!, stranger!);
    for (const force of [true, false]) {
      const err = await outputPath(link, force).then(
        (path) => path,
        (e: unknown) => e,
      );
      expect(isCairnError(err) && err.code, `force=${force}: ${String(err)}`).toBe('UNAVAILABLE');
      expect(isCairnError(err) && err.details?.file).toBe(link);
    }
    expect(await readFile(victim, 'utf8')).toBe('ssh-ed25519 AAAA me\n');
  });

  it('still writes through a link of its own, of the directory owner, or outside a sticky directory', async () => {
    const own = join(shared, 'own.json');
    await symlink(victim, own);
    expect((await lstat(own)).uid).toBe(me);
    expect(await outputPath(own, true)).toBe(victim);

    const plain = join(dir, 'plain');
    await mkdir(plain);
    await chmod(plain, 0o777); // world-writable but not sticky: the kernel follows such links too
    const other = join(plain, 'other.json');
    await symlink(victim, other);
    await lchown(other, stranger!, stranger!);
    expect(await outputPath(other, true)).toBe(victim);
  });
});
