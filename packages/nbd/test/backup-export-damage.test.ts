// serveBackup over an encrypted repository, and over damaged ones: EIO for the damaged range, seen
// by real clients (nbdcopy, qemu-io) and ours, never wrong bytes.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, serveBackup, type BackupExport } from '../src/index.js';
import { CHUNK, MiB, backupFixture, corruptChunk, type BackupFixture } from './backup-export-fixture.js';
import { mustRun, run, tempDir } from './helpers/peers.js';

let dir: { path: string; remove: () => Promise<void> };

beforeAll(async () => {
  dir = await tempDir('nbd-bxd-');
});

afterAll(async () => {
  await dir?.remove();
});

describe('serveBackup over an encrypted repository', () => {
  let f: BackupFixture;
  let served: BackupExport;

  beforeAll(async () => {
    f = await backupFixture(join(dir.path), { passphrase: 'correct horse' });
    served = await serveBackup(f.service, f.backup.id, { listen: { path: join(dir.path, 'enc.sock') } });
  });

  afterAll(async () => {
    await served?.close();
    await f?.service.close();
  });

  it('nbdcopy and qemu-img convert of the export are byte-identical to the source volume', async () => {
    const packs: string[] = [];
    for await (const o of f.store.list('packs/')) packs.push(o.key);
    expect((await f.store.get(packs[0]!)).includes(Buffer.from('slot 2 text line'))).toBe(false);
    await mustRun('nbdcopy', [served.uri, join(dir.path, 'enc-copy.raw')]);
    expect((await readFile(join(dir.path, 'enc-copy.raw'))).equals(f.source)).toBe(true);
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', served.uri, join(dir.path, 'enc-convert.raw')]);
    expect((await readFile(join(dir.path, 'enc-convert.raw'))).equals(f.source)).toBe(true);
  });
});

describe('serveBackup over a damaged repository', () => {
  let f: BackupFixture;
  let served: BackupExport;
  /** The damaged chunk's byte range. */
  const BAD = { offset: 2 * CHUNK, length: CHUNK };

  beforeAll(async () => {
    const d = join(dir.path, 'damaged');
    await import('node:fs/promises').then((fs) => fs.mkdir(d));
    f = await backupFixture(d);
    await corruptChunk(f, BAD.offset / CHUNK);
    served = await serveBackup(f.service, f.backup.id, { listen: { path: join(dir.path, 'bad.sock') } });
  });

  afterAll(async () => {
    await served?.close();
    await f?.service.close();
  });

  it('a read touching the corrupted chunk fails with EIO (UNAVAILABLE), again on retry; other ranges read correctly', async () => {
    const client = await NbdClient.connect({ path: join(dir.path, 'bad.sock'), exportName: f.backup.id });
    try {
      for (const attempt of [1, 2]) {
        await expect(client.read(BAD.offset + 100, 4096), `attempt ${attempt}`).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdErrorName: 'EIO' } });
      }
      await expect(client.read(0, 4 * CHUNK)).rejects.toMatchObject({ details: { nbdErrorName: 'EIO' } });
      expect((await client.read(0, BAD.offset)).equals(f.source.subarray(0, BAD.offset))).toBe(true);
      const after = BAD.offset + BAD.length;
      expect((await client.read(after, 2 * MiB)).equals(f.source.subarray(after, after + 2 * MiB))).toBe(true);
    } finally {
      await client.disconnect();
    }
  });

  it('nbdcopy of the export fails instead of writing wrong data', async () => {
    const r = await run('nbdcopy', [served.uri, join(dir.path, 'bad-copy.raw')]);
    expect(r.code).not.toBe(0);
  });

  it('qemu-io reads of the damaged range fail while reads elsewhere succeed with the right bytes', async () => {
    const bad = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read ${BAD.offset} 4096`, served.uri]);
    expect(`${bad.stdout}${bad.stderr}`).toMatch(/Input\/output error/);
    const tail = f.source.subarray(f.source.length - 200, f.source.length - 200 + 11);
    expect(tail.toString()).toBe('tail-marker');
    const good = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read -v ${f.source.length - 200} 11`, served.uri]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain(tail.toString('hex').replace(/(..)(?!$)/g, '$1 ')); // the hex dump of 'tail-marker'
    expect(good.stdout).not.toMatch(/error/i);
  });

  it('a chunk whose pack is missing fails its reads with EIO; chunks of other packs still read', async () => {
    const repo = f.service.repository;
    const manifest = await repo.readManifest(f.backup.id);
    const lastData = manifest.chunks.length - 1;
    const lost = repo.index.get((await manifest.chunks.get(lastData))!)!.pack;
    const badId = await manifest.chunks.get(BAD.offset / CHUNK);
    const kept = (await manifest.chunks.slice()).findIndex((c) => c !== null && repo.index.get(c)!.pack !== lost && c !== badId);
    expect(kept).toBeGreaterThanOrEqual(0);
    await f.store.delete(`packs/${lost}`);
    const fresh = await serveBackup(f.service, f.backup.id, { listen: { path: join(dir.path, 'lost.sock') }, lock: false });
    const client = await NbdClient.connect({ path: join(dir.path, 'lost.sock'), exportName: f.backup.id });
    try {
      await expect(client.read(lastData * CHUNK, 4096)).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { nbdErrorName: 'EIO' } });
      expect((await client.read(kept * CHUNK, CHUNK)).equals(f.source.subarray(kept * CHUNK, (kept + 1) * CHUNK))).toBe(true);
    } finally {
      await client.disconnect();
      await fresh.close();
    }
  });
});
