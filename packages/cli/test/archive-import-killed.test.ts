import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, cairnUnderway, jsonError, MiB, removeDir, tempDir } from './helpers.js';

/**
 * Archives moved between deployments when things go wrong: an import SIGKILLed while it writes
 * the data, and an export of a backup whose stored chunk is damaged. Real `cairn` processes, real
 * posix repositories and file volumes in temporary directories.
 */
describe('backup import killed outright, and export of a damaged backup', () => {
  let cwd: string;
  let other: string;
  let data: Buffer;
  let id: string;
  const archive = () => join(cwd, 'a.tar');

  beforeAll(async () => {
    cwd = await tempDir();
    other = await tempDir();
    data = randomBytes(64 * MiB);
    await writeFile(join(cwd, 'a.raw'), data);
    await cairnJson(['volume', 'import', join(cwd, 'a.raw'), '--name', 'a'], { cwd });
    id = (await cairnJson(['backup', 'create', 'a'], { cwd })).id;
    await cairnJson(['backup', 'export', id, '--archive', archive()], { cwd });
  }, 120_000);
  afterAll(async () => {
    await removeDir(cwd);
    await removeDir(other);
  });

  it('an import SIGKILLed while it writes the data: the plain retry recovers its claim and imports the archive again, which survives gc, verifies and restores byte-exact', async () => {
    const run = await cairnUnderway(['backup', 'import', archive()], { cwd: other }, async (stderr) => stderr.includes('import: backup:'), { tries: 6000, everyMs: 5 });
    run.kill();
    await run.exit;

    const again = await cairn(['backup', 'import', archive(), '--json'], { cwd: other });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ id, status: 'available' });
    expect((await cairnJson(['backup', 'list'], { cwd: other })).map((b: { id: string; status: string }) => [b.id, b.status])).toEqual([[id, 'available']]);
    await cairnJson(['repo', 'gc'], { cwd: other });
    expect(await cairnJson(['backup', 'verify', id], { cwd: other })).toMatchObject({ checked: [id], problems: [] });
    const restored = await cairnJson(['backup', 'restore', id, '--new'], { cwd: other });
    await cairnJson(['volume', 'export', restored.volume.id, join(other, 'r.raw')], { cwd: other });
    expect((await readFile(join(other, 'r.raw'))).equals(data)).toBe(true);
  });

  it('an export of a backup whose stored pack is damaged is CORRUPT (exit 5), writes no archive, and leaves the backup available', async () => {
    const packs = join(cwd, '.cairn/repository/packs');
    const files: string[] = [];
    for (const dir of await readdir(packs)) for (const f of await readdir(join(packs, dir))) files.push(join(packs, dir, f));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const bytes = await readFile(f);
      bytes[bytes.length >> 1] ^= 0xff;
      await writeFile(f, bytes);
    }
    const out = join(cwd, 'out');
    await mkdir(out);
    const r = await cairn(['backup', 'export', id, '--archive', join(out, 'damaged.tar'), '--json'], { cwd });
    expect(r.code, r.stderr).toBe(5);
    expect(jsonError(r).code).toBe('CORRUPT');
    expect(await readdir(out)).toEqual([]);
    expect((await cairnJson(['backup', 'show', id], { cwd })).status).toBe('available');
  });
});
