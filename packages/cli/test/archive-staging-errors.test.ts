import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, listTree, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * An import stages the archive's data in its staging directory (--staging-dir): when that directory
 * cannot take the staging, the error says so, with the code of its cause, and is never reported
 * as a fault of the archive (`CORRUPT`, or `NOT_FOUND` "archive … does not exist"). Nothing is
 * written to the target. A 1 MiB tmpfs, filled, stands in for a full temporary directory (needs
 * root; skipped otherwise).
 */
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('backup import when the staging directory cannot take the staging', () => {
  let cwd: string;
  let other: string;
  let full: string;
  let archive: string;

  beforeAll(async () => {
    cwd = await tempDir();
    other = await tempDir();
    full = join(cwd, 'full-tmp');
    await mkdir(full);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', full]);
    await writeFile(join(full, 'filler'), Buffer.alloc(1024 * 1024)).catch(() => undefined); // ENOSPC once full: the point
    await writeRawImage(join(cwd, 'a.raw'), 2 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    const backup = await cairnJson(['backup', 'create', 'a'], { cwd });
    archive = join(cwd, 'a.tar');
    await cairnJson(['backup', 'export', backup.id, '--archive', archive], { cwd });
    // The target's state exists before the imports: an import that worked, then deleted.
    await cairnJson(['backup', 'import', archive], { cwd: other });
    await cairnJson(['backup', 'delete', backup.id], { cwd: other });
  });
  afterAll(async () => {
    if (full) execFileSync('umount', [full]);
    await removeDir(cwd);
    await removeDir(other);
  });

  const cases: [string, () => string, number, string][] = [
    ['is full', () => full, 6, 'UNAVAILABLE'],
    ['does not exist', () => join(cwd, 'no-such-dir'), 3, 'NOT_FOUND'],
    ['is a file', () => archive, 2, 'INVALID_INPUT'],
  ];
  for (const [what, dir, exit, code] of cases) {
    it(`--staging-dir that ${what}: ${code} (exit ${exit}) naming the staging directory, not the archive; nothing is written`, async () => {
      const before = await listTree(other);
      const r = await cairn(['backup', 'import', archive, '--staging-dir', dir(), '--json'], { cwd: other });
      expect(r.code, r.stderr).toBe(exit);
      const e = jsonError(r);
      expect(e.code).toBe(code);
      expect(e.message).toContain(`staging directory in ${dir()}`);
      expect(await listTree(other)).toEqual(before);
    });
  }
});
