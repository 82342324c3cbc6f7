import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readdir, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cairn, jsonError, useArchivedBackup } from './helpers.js';

const root = process.getuid?.() === 0;

/**
 * docs/cli.md, "volume export": only a regular file is written or replaced. An output is written
 * beside its path and renamed over it, which would replace a device node or FIFO there (or one a
 * link leads to) with a regular file: `export-record -o /dev/null` as root would replace
 * /dev/null. Such a path is INVALID_INPUT naming it and its kind, with or without --force, before
 * anything is written; the node is left as it was, and nothing is left beside it.
 */
describe('an output path that is a device node or FIFO is refused', () => {
  const fixture = useArchivedBackup(1024 * 1024);

  /** A fresh directory in the fixture's cwd holding `name`, made by `make`. */
  async function special(name: string, make: (path: string) => void | Promise<void>): Promise<{ dir: string; path: string }> {
    const dir = join(fixture.cwd, `d-${name}-${Math.random().toString(36).slice(2)}`);
    await mkdir(dir);
    const path = join(dir, name);
    await make(path);
    return { dir, path };
  }
  const fifo = (p: string) => void execFileSync('mkfifo', [p]);
  const nullDevice = (p: string) => void execFileSync('mknod', [p, 'c', '1', '3']);
  const loopDevice = (p: string) => void execFileSync('mknod', [p, 'b', '7', '0']);

  async function expectRefused(args: string[], dir: string, path: string, kind: string, isKind: (s: Awaited<ReturnType<typeof lstat>>) => boolean): Promise<void> {
    const r = await cairn([...args, '--json'], { cwd: fixture.cwd });
    expect(r.code, r.stderr).toBe(2);
    const e = jsonError(r);
    expect(e.code).toBe('INVALID_INPUT');
    expect(e.details).toMatchObject({ kind });
    expect(e.message).toContain(kind);
    expect(isKind(await stat(path))).toBe(true); // still what it was, not a regular file
    expect((await readdir(dir)).filter((n) => n.startsWith('.cairn-partial-'))).toEqual([]);
  }

  it('volume export --force to a FIFO, and to a link to one', async () => {
    const { dir, path } = await special('f', fifo);
    await expectRefused(['volume', 'export', 'a', path, '--force'], dir, path, 'FIFO', (s) => s.isFIFO());
    const link = join(dir, 'link');
    await symlink(path, link);
    await expectRefused(['volume', 'export', 'a', link, '--force'], dir, path, 'FIFO', (s) => s.isFIFO());
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
  });

  it.skipIf(!root)('volume export --force to a character device and to a block device (mknod: root)', async () => {
    const c = await special('null', nullDevice);
    await expectRefused(['volume', 'export', 'a', c.path, '--force'], c.dir, c.path, 'character device', (s) => s.isCharacterDevice());
    const b = await special('sdx', loopDevice);
    await expectRefused(['volume', 'export', 'a', b.path, '--force'], b.dir, b.path, 'block device', (s) => s.isBlockDevice());
  });

  it('backup export --archive --force to a FIFO', async () => {
    const { dir, path } = await special('a.tar', fifo);
    await expectRefused(['backup', 'export', fixture.backupId, '--archive', path, '--force'], dir, path, 'FIFO', (s) => s.isFIFO());
  });

  it.skipIf(!root)('backup export --archive --force to a character device (mknod: root)', async () => {
    const { dir, path } = await special('null', nullDevice);
    await expectRefused(['backup', 'export', fixture.backupId, '--archive', path, '--force'], dir, path, 'character device', (s) => s.isCharacterDevice());
  });

  it('backup export-record -o (which always replaces) to a FIFO; -o - still writes stdout', async () => {
    const { dir, path } = await special('rec', fifo);
    await expectRefused(['backup', 'export-record', fixture.backupId, '-o', path], dir, path, 'FIFO', (s) => s.isFIFO());
    const r = await cairn(['backup', 'export-record', fixture.backupId, '-o', '-'], { cwd: fixture.cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ service: 'posix', record: expect.any(String) });
  });

  it.skipIf(!root)('backup export-record -o to a character device (mknod: root)', async () => {
    const { dir, path } = await special('null', nullDevice);
    await expectRefused(['backup', 'export-record', fixture.backupId, '-o', path], dir, path, 'character device', (s) => s.isCharacterDevice());
  });
});
