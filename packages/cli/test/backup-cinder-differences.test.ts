import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, jsonError, MiB, removeDir, tempDir, writeRawImage } from './helpers.js';

/**
 * Where Cairn's backups behave otherwise than Cinder's, as docs/api.md ("Compared with Cinder")
 * says, and where they behave the same: the real CLI over a posix repository and file volumes.
 */
describe('backup semantics compared with Cinder', () => {
  let cwd: string;

  beforeAll(async () => {
    cwd = await tempDir();
  });
  afterAll(async () => {
    await removeDir(cwd);
  });

  /** A volume's bytes, through `cairn volume export`. */
  async function volumeBytes(volume: string): Promise<Buffer> {
    const file = join(cwd, `export-${volume}.raw`);
    await cairnJson(['volume', 'export', volume, file, '--force'], { cwd });
    return readFile(file);
  }

  it('deleting a backup an incremental was built on is allowed on the posix repository (Cinder refuses): the incremental stays restorable, its parentId names the deleted backup, and --cascade deletes nothing more', async () => {
    const first = await writeRawImage(join(cwd, 'web.raw'), 3 * MiB);
    await cairnJson(['volume', 'import', join(cwd, 'web.raw'), '--name', 'web'], { cwd });
    const full = await cairnJson(['backup', 'create', 'web'], { cwd });
    const second = Buffer.from(first);
    randomBytes(64 * 1024).copy(second, MiB + 4096);
    await writeFile(join(cwd, 'web2.raw'), second);
    await cairnJson(['volume', 'import', join(cwd, 'web2.raw'), '--into', 'web'], { cwd });
    const inc = await cairnJson(['backup', 'create', 'web', '--incremental'], { cwd });
    const inc2 = await cairnJson(['backup', 'create', 'web', '--incremental'], { cwd });
    expect(inc).toMatchObject({ incremental: true, parentId: full.id });
    expect(inc2).toMatchObject({ incremental: true, parentId: inc.id });
    expect((await cairnJson(['backup', 'children', full.id], { cwd })).map((b: { id: string }) => b.id)).toEqual([inc.id]);

    expect(await cairnJson(['backup', 'delete', full.id], { cwd })).toEqual({ deleted: full.id });
    // --cascade on a target without dependent chains deletes the backup named, not its dependents.
    expect(await cairnJson(['backup', 'delete', inc.id, '--cascade'], { cwd })).toEqual({ deleted: inc.id });
    const left = await cairnJson(['backup', 'list', '--volume', 'web'], { cwd });
    expect(left).toEqual([expect.objectContaining({ id: inc2.id, status: 'available', parentId: inc.id })]);
    const gone = await cairn(['backup', 'children', inc.id, '--json'], { cwd });
    expect(gone.code).toBe(3);
    expect(jsonError(gone).code).toBe('NOT_FOUND');

    const restored = await cairnJson(['backup', 'restore', inc2.id, '--new', '--name', 'web-restored'], { cwd });
    expect((await volumeBytes(restored.volume.id)).equals(second)).toBe(true);
    expect((await cairnJson(['backup', 'verify', inc2.id], { cwd })).problems).toEqual([]);
  });

  it('a restore onto a larger existing volume writes the backup from offset 0, holes as zeros, and leaves the bytes past its size as they were (as Cinder); onto a smaller one it is INVALID_INPUT', async () => {
    const small = Buffer.alloc(2 * MiB);
    small.write('only the start holds data');
    await writeFile(join(cwd, 'small.raw'), small);
    await cairnJson(['volume', 'import', join(cwd, 'small.raw'), '--name', 'small'], { cwd });
    const backup = await cairnJson(['backup', 'create', 'small'], { cwd });
    const big = randomBytes(5 * MiB);
    await writeFile(join(cwd, 'big.raw'), big);
    await cairnJson(['volume', 'import', join(cwd, 'big.raw'), '--name', 'big'], { cwd });
    const tiny = randomBytes(MiB);
    await writeFile(join(cwd, 'tiny.raw'), tiny);
    await cairnJson(['volume', 'import', join(cwd, 'tiny.raw'), '--name', 'tiny'], { cwd });

    const refused = await cairn(['backup', 'restore', backup.id, '--to', 'tiny', '--json'], { cwd });
    expect(refused.code).toBe(2);
    expect(jsonError(refused).code).toBe('INVALID_INPUT');
    expect((await volumeBytes('tiny')).equals(tiny)).toBe(true);

    const result = await cairnJson(['backup', 'restore', backup.id, '--to', 'big'], { cwd });
    expect(result.volume).toMatchObject({ name: 'big', size: 5 * MiB, status: 'available' });
    const after = await volumeBytes('big');
    expect(after.subarray(0, 2 * MiB).equals(small)).toBe(true);
    expect(after.subarray(2 * MiB).equals(big.subarray(2 * MiB))).toBe(true);
  });
});
