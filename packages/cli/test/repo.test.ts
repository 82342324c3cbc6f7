import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PosixObjectStore } from '@cairn/backup-posix';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeRawImage, jsonError } from './helpers.js';

describe('cairn repo', () => {
  let cwd: string;
  const json = (args: string[]) => cairnJson(args, { cwd });

  beforeAll(async () => {
    cwd = await tempDir();
    await writeRawImage(join(cwd, 'v.raw'), 3 * MiB);
    await json(['volume', 'import', join(cwd, 'v.raw'), '--name', 'v']);
  });
  afterAll(() => removeDir(cwd));

  it('repo stats --json reports backups, packs and bytes', async () => {
    await json(['backup', 'create', 'v']);
    const s = await json(['repo', 'stats']);
    expect(s).toMatchObject({ encrypted: false, backups: 1, compression: 'zstd' });
    expect(s.packs).toBeGreaterThan(0);
    expect(s.rawBytes).toBeGreaterThan(0);
    expect(s.storedBytes).toBeGreaterThan(0);
    expect(s.chunkListPages).toBe(1);
    expect(s.chunkListBytes).toBeGreaterThan(0);
    expect(Object.keys(s).sort()).toEqual(['backups', 'chunkListBytes', 'chunkListPages', 'chunkSize', 'chunks', 'compression', 'encrypted', 'id', 'packs', 'rawBytes', 'storedBytes']);
  });

  it('repo verify checks every backup and exits 0 when intact', async () => {
    const r = await json(['repo', 'verify']);
    expect(r.checked).toHaveLength(1);
    expect(r.problems).toEqual([]);
  });

  it('repo gc --grace 0 frees the chunks of a deleted backup; --dry-run frees nothing', async () => {
    const [b] = await json(['backup', 'list']);
    await json(['backup', 'delete', b.id]);
    const dry = await json(['repo', 'gc', '--grace', '0', '--dry-run']);
    expect(dry.packsDeleted).toBeGreaterThan(0);
    expect((await json(['repo', 'stats'])).packs).toBeGreaterThan(0);
    const gc = await json(['repo', 'gc', '--grace', '0']);
    expect(gc).toMatchObject({ backups: 0 });
    expect(gc.bytesFreed).toBeGreaterThan(0);
    expect(await json(['repo', 'stats'])).toMatchObject({ backups: 0, packs: 0, chunks: 0 });
  });

  it('repo gc leaves a key under catalog/by-volume/ that is no volume entry alone, and counts it in JSON and text', async () => {
    const store = await PosixObjectStore.open({ directory: join(cwd, '.cairn/repository') });
    const foreign = 'catalog/by-volume/not-cairns/copied/20260101T000000000Z.gone';
    await store.put(foreign, Buffer.from('x'));
    expect(await json(['repo', 'gc', '--grace', '0'])).toMatchObject({ catalogKeysUnknown: 1, catalogEntriesDeleted: 0 });
    const text = await cairn(['repo', 'gc', '--grace', '0'], { cwd });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/catalog keys not written by Cairn \(left alone\):\s+1\n/);
    // GC's duplicate-copy counts (dropped-copies.ts) are shown too; nothing here is stored twice.
    expect(text.stdout).toMatch(/damaged chunk copies replaced from a good copy:\s+0\n/);
    expect(text.stdout).toMatch(/chunks with no readable copy \(their packs kept\):\s+0\n/);
    await store.head(foreign); // still there
    await store.delete(foreign);
  });

  it('repo unlock removes a stale lock; --force removes live ones too', async () => {
    const store = await PosixObjectStore.open({ directory: join(cwd, '.cairn/repository') });
    const lock = (id: string, pid: number) => ({
      id,
      kind: 'exclusive',
      owner: { host: 'elsewhere', pid },
      purpose: 'test',
      createdAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + (pid === 1 ? 3_600_000 : -1000)).toISOString(),
    });
    await store.put('locks/stale-lock', Buffer.from(JSON.stringify(lock('stale-lock', 2))));
    await store.put('locks/live-lock', Buffer.from(JSON.stringify(lock('live-lock', 1))));
    const locks = await json(['repo', 'locks']);
    expect(locks.map((l: { id: string; stale: boolean }) => [l.id, l.stale]).sort()).toEqual([['live-lock', false], ['stale-lock', true]]);
    const busy = await cairn(['repo', 'gc', '--json'], { cwd });
    expect(busy.code).toBe(4);
    expect(jsonError(busy).code).toBe('BUSY');
    expect(await json(['repo', 'unlock'])).toEqual({ removed: ['stale-lock'] });
    expect(await json(['repo', 'unlock', '--force'])).toEqual({ removed: ['live-lock'] });
    expect(await json(['repo', 'locks'])).toEqual([]);
  });

  it('repo verify reports a damaged pack as a problem and exits 5 (CORRUPT)', async () => {
    await json(['backup', 'create', 'v']);
    const { readdir, readFile } = await import('node:fs/promises');
    const walk = async (d: string): Promise<string[]> =>
      (await Promise.all((await readdir(d, { withFileTypes: true })).map((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)])))).flat();
    const packs = (await walk(join(cwd, '.cairn/repository/packs'))).filter((f) => !f.includes('.tmp'));
    expect(packs.length).toBeGreaterThan(0);
    const bytes = await readFile(packs[0]!);
    bytes[100] ^= 0xff;
    await writeFile(packs[0]!, bytes);
    const r = await cairn(['repo', 'verify', '--json'], { cwd });
    expect(r.code).toBe(5);
    expect(JSON.parse(r.stdout).problems.length).toBeGreaterThan(0);
    expect((await cairn(['backup', 'verify'], { cwd })).code).toBe(5);
  });

  it('repo commands on an unknown target are NOT_FOUND (exit 3)', async () => {
    expect((await cairn(['repo', 'stats', '--target', 'nope'], { cwd })).code).toBe(3);
  });
});
