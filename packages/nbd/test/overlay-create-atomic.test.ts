// OverlayFile.open creates a new overlay atomically: both files under `.cairn-new` names, then the data
// file renamed, then the map. Every state a crash can leave (made here by hand) opens: leftovers
// of a creation that did not get to its renames are replaced, and one cut short between the two
// renames is finished.
import { mkdir, readFile, readdir, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OverlayFile } from '../src/index.js';
import { tempDir } from './helpers/peers.js';

const KiB = 1024;
const SIZE = 1024 * KiB;
const identity = { backupId: 'b', size: SIZE };
const base = async (_offset: number, length: number): Promise<Buffer> => Buffer.alloc(length, 0x5a);
let dir: { path: string; remove: () => Promise<void> };
let n = 0;

beforeAll(async () => {
  dir = await tempDir('nbd-ovc-');
});
afterAll(async () => {
  await dir?.remove();
});

/** The map of a whole new overlay of `identity`. */
async function newMap(): Promise<Buffer> {
  const p = join(dir.path, `whole${++n}.img`);
  await (await OverlayFile.open(p, identity, base)).close();
  return readFile(`${p}.map`);
}

/** Opens `path`, writes a block, closes, reopens: the overlay works and keeps its write. */
async function expectUsable(path: string): Promise<void> {
  const o = await OverlayFile.open(path, identity, base);
  await o.write(64 * KiB, Buffer.alloc(64 * KiB, 0x11));
  await o.close();
  const again = await OverlayFile.open(path, identity, base);
  try {
    expect(again.written(0, SIZE)).toEqual([{ offset: 64 * KiB, length: 64 * KiB }]);
    expect((await again.read(64 * KiB, 64 * KiB)).equals(Buffer.alloc(64 * KiB, 0x11))).toBe(true);
  } finally {
    await again.close();
  }
}

describe('OverlayFile first creation', () => {
  it('leaves no temporary files behind', async () => {
    const sub = join(dir.path, `d${++n}`);
    await mkdir(sub);
    await (await OverlayFile.open(join(sub, 'o.img'), identity, base)).close();
    expect((await readdir(sub)).sort()).toEqual(['o.img', 'o.img.map']);
  });

  it('makes both files owner-only (0600), whatever the umask and a leftover’s mode: they hold blocks of the backup, decrypted', async () => {
    const path = join(dir.path, `m${++n}.img`);
    await writeFile(`${path}.cairn-new`, Buffer.alloc(100), { mode: 0o644 });
    const umask = process.umask(0o022);
    try {
      await (await OverlayFile.open(path, identity, base)).close();
    } finally {
      process.umask(umask);
    }
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(`${path}.map`)).mode & 0o777).toBe(0o600);
  });

  it('a crash before the renames (a short data file, a short map under .cairn-new names): the next open creates the overlay anew', async () => {
    const path = join(dir.path, `o${++n}.img`);
    await writeFile(`${path}.cairn-new`, Buffer.alloc(100));
    await writeFile(`${path}.map.cairn-new`, Buffer.from('CAIRN-OVERLAY/1\n{"backupId":'));
    await expectUsable(path);
  });

  it('a crash between the renames (the data file, its map still under .map.cairn-new): the next open finishes the creation', async () => {
    const path = join(dir.path, `o${++n}.img`);
    await writeFile(path, Buffer.alloc(0));
    await truncate(path, SIZE);
    await writeFile(`${path}.map.cairn-new`, await newMap());
    await expectUsable(path);
  });

  it('leaves a user’s files named <path>.new and <path>.map.new alone, and follows no link planted at a temporary name', async () => {
    const path = join(dir.path, `u${++n}.img`);
    await writeFile(`${path}.new`, 'precious');
    await writeFile(`${path}.map.new`, 'precious too');
    const target = join(dir.path, `target${n}`);
    await writeFile(target, 'not to be truncated');
    await symlink(target, `${path}.cairn-new`);
    await expectUsable(path);
    expect(await readFile(`${path}.new`, 'utf8')).toBe('precious');
    expect(await readFile(`${path}.map.new`, 'utf8')).toBe('precious too');
    expect(await readFile(target, 'utf8')).toBe('not to be truncated');
  });

  it('a data file without its map and nothing to finish it with is still CONFLICT', async () => {
    const path = join(dir.path, `o${++n}.img`);
    await writeFile(path, Buffer.alloc(SIZE, 1));
    await expect(OverlayFile.open(path, identity, base)).rejects.toMatchObject({ code: 'CONFLICT' });
  });
});
