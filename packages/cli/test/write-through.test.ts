import { lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * `volume export` and `backup export --archive` write through a symbolic link, as `cp` does: the
 * file the link points to gets the new content (replaced whole, through a temporary file in its
 * own directory) and the link stays; a dangling link is refused.
 */
describe('exports onto a symbolic link', () => {
  let cwd: string;
  let data: Buffer;
  let backupId: string;
  const run = (args: string[]) => cairn(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    data = await writeRawImage(join(cwd, 'src.raw'), 2 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'src.raw'), '--name', 'src'], { cwd });
    backupId = (await cairnJson(['backup', 'create', 'src'], { cwd })).id;
    await mkdir(join(cwd, 'store'));
    await mkdir(join(cwd, 'links'));
  });
  afterAll(() => removeDir(cwd));

  /** `links/<name>` → `../store/<name>` (relative, as people make them), the target holding `old`. */
  async function linked(name: string): Promise<{ link: string; target: string }> {
    const link = join(cwd, 'links', name);
    const target = join(cwd, 'store', name);
    await writeFile(target, 'old content');
    await symlink(join('..', 'store', name), link);
    return { link, target };
  }

  async function expectLinkKept(link: string, name: string): Promise<void> {
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe(join('..', 'store', name));
  }

  /** No temporary or partial file left in either directory. */
  async function expectNoLeftovers(): Promise<void> {
    const names = [...(await readdir(join(cwd, 'store'))), ...(await readdir(join(cwd, 'links')))];
    expect(names.filter((n) => /\.tmp$|\.partial$/.test(n))).toEqual([]);
  }

  it('volume export: without --force ALREADY_EXISTS (exit 4); with --force the target gets the image and the link stays', async () => {
    const { link, target } = await linked('disk.raw');
    const refused = await run(['volume', 'export', 'src', link, '--json']);
    expect([refused.code, jsonError(refused).code]).toEqual([4, 'ALREADY_EXISTS']);
    const r = await cairnJson(['volume', 'export', 'src', link, '--force'], { cwd });
    await expectLinkKept(link, 'disk.raw');
    expect((await readFile(target)).equals(data)).toBe(true);
    expect(r.file).toBe(target); // the path written
    await expectNoLeftovers();
  });

  it('backup export --archive --force writes the archive at the target; it imports back', async () => {
    const { link, target } = await linked('b.tar');
    expect((await run(['backup', 'export', backupId, '--archive', link])).code).toBe(4);
    await cairnJson(['backup', 'export', backupId, '--archive', link, '--force'], { cwd });
    await expectLinkKept(link, 'b.tar');
    expect((await readFile(target)).subarray(0, 11).toString()).not.toBe('old content');
    await expectNoLeftovers();
    await cairnJson(['backup', 'delete', backupId], { cwd });
    expect(await cairnJson(['backup', 'import', link], { cwd })).toMatchObject({ id: backupId, status: 'available' });
  });

  it('a dangling link is refused with INVALID_INPUT (exit 2), with or without --force, and nothing is written', async () => {
    const link = join(cwd, 'links', 'dangling.raw');
    await symlink(join('..', 'store', 'missing.raw'), link);
    for (const args of [['volume', 'export', 'src', link], ['volume', 'export', 'src', link, '--force'], ['backup', 'export', backupId, '--archive', link, '--force']]) {
      const r = await run([...args, '--json']);
      expect([r.code, jsonError(r).code], args.join(' ')).toEqual([2, 'INVALID_INPUT']);
    }
    await expectLinkKept(link, 'missing.raw');
    expect(await lstat(join(cwd, 'store', 'missing.raw')).catch((e) => e.code)).toBe('ENOENT');
    await expectNoLeftovers();
  });
});
