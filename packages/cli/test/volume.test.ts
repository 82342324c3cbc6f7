import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { FileVolumeDriver } from '@cairn/volume-file';
import type { BlockDevice } from '@cairn/core';
import { CliContext } from '../src/context.js';
import { differingWrites } from '../src/images/differing-writes.js';
import { writeImageToDevice } from '../src/images/image-copy.js';
import { buildProgram } from '../src/program.js';
import { Output } from '../src/output/output.js';
import { cairn, cairnJson, MiB, removeDir, tempDir, writeDeploymentConfig, writeRawImage, jsonError } from './helpers.js';

describe('cairn volume', () => {
  let cwd: string;
  beforeAll(async () => (cwd = await tempDir()));
  afterAll(() => removeDir(cwd));
  const run = (args: string[]) => cairn(args, { cwd });
  const json = (args: string[]) => cairnJson(args, { cwd });

  it('volume create --json returns the volume; list and show find it by id and by name', async () => {
    const v = await json(['volume', 'create', 'alpha', '--size', '2MiB', '-m', 'role=db']);
    expect(v).toMatchObject({ name: 'alpha', size: 2 * MiB, status: 'available', metadata: { role: 'db' } });
    expect(typeof v.id).toBe('string');
    const list = await json(['volume', 'list']);
    expect(list.map((x: { id: string }) => x.id)).toContain(v.id);
    const shown = await json(['volume', 'show', 'alpha']);
    expect(shown).toMatchObject({ id: v.id, snapshots: [] });
    const human = await run(['volume', 'show', v.id]);
    expect(human.stdout).toContain('alpha');
  });

  it('volume create with a bad size exits 2 (INVALID_INPUT)', async () => {
    const r = await run(['volume', 'create', 'bad', '--size', '1000', '--json']);
    expect(r.code).toBe(2);
    expect(jsonError(r).code).toBe('INVALID_INPUT');
    expect((await run(['volume', 'create', 'bad', '--size', 'lots'])).code).toBe(2);
  });

  it('volume create takes a decimal size exactly: 512.512KB is 512512 bytes (not refused as a fraction of a byte)', async () => {
    expect(await json(['volume', 'create', 'decimal', '--size', '512.512KB'])).toMatchObject({ size: 512_512 });
    const r = await run(['volume', 'create', 'half-byte', '--size', '0.0005KB', '--json']);
    expect(r.code).toBe(2);
    expect(jsonError(r).code).toBe('INVALID_INPUT');
  });

  it('volume show of an unknown volume exits 3 (NOT_FOUND)', async () => {
    const r = await run(['volume', 'show', 'no-such-volume', '--json']);
    expect(r.code).toBe(3);
    expect(jsonError(r).code).toBe('NOT_FOUND');
  });

  it('volume snapshot, snapshots and delete-snapshot manage snapshots; delete refuses a volume with snapshots (BUSY, exit 4)', async () => {
    const v = await json(['volume', 'create', 'snappy', '--size', '1MiB']);
    const s = await json(['volume', 'snapshot', v.id, '--name', 'first']);
    expect(s).toMatchObject({ volumeId: v.id, name: 'first' });
    expect((await json(['volume', 'snapshots', 'snappy'])).map((x: { id: string }) => x.id)).toEqual([s.id]);
    expect((await run(['volume', 'delete', v.id])).code).toBe(4);
    expect(await json(['volume', 'delete-snapshot', s.id])).toEqual({ deleted: s.id });
    expect(await json(['volume', 'delete', v.id])).toEqual({ deleted: v.id });
    expect((await run(['volume', 'show', v.id])).code).toBe(3);
  });

  it('volume import of a raw image creates a volume whose export is byte-identical', async () => {
    const image = join(cwd, 'disk.raw');
    const data = await writeRawImage(image, 3 * MiB);
    const r = await json(['volume', 'import', image, '--name', 'imported']);
    expect(r).toMatchObject({ format: 'raw', created: true, volume: { name: 'imported', size: 3 * MiB } });
    const out = join(cwd, 'out.raw');
    const e = await json(['volume', 'export', 'imported', out]);
    expect(e).toMatchObject({ format: 'raw', size: 3 * MiB });
    expect((await readFile(out)).equals(data)).toBe(true);
    expect((await run(['volume', 'export', 'imported', out])).code).toBe(4);
  });

  it('volume import --into writes only the blocks that differ', async () => {
    const image = join(cwd, 'base.raw');
    const data = await writeRawImage(image, 2 * MiB);
    const v = await json(['volume', 'import', image, '--name', 'target']);
    const changed = Buffer.from(data);
    randomBytes(65536).copy(changed, 5 * 65536);
    await writeFile(join(cwd, 'changed.raw'), changed);
    const r = await json(['volume', 'import', join(cwd, 'changed.raw'), '--into', v.volume.id]);
    expect(r).toMatchObject({ created: false, bytesScanned: 2 * MiB, bytesWritten: 65536 });
    const out = join(cwd, 'target.raw');
    await json(['volume', 'export', v.volume.id, out]);
    expect((await readFile(out)).equals(changed)).toBe(true);
  });

  it('volume import --into a smaller volume fails with INVALID_INPUT (exit 2) and --name with --into is refused', async () => {
    const image = join(cwd, 'big.raw');
    await writeRawImage(image, 2 * MiB);
    const small = await json(['volume', 'create', 'small', '--size', '1MiB']);
    const r = await run(['volume', 'import', image, '--into', small.id, '--json']);
    expect(r.code).toBe(2);
    expect(jsonError(r).code).toBe('INVALID_INPUT');
    expect((await run(['volume', 'import', image, '--into', small.id, '--name', 'x'])).code).toBe(2);
    expect((await run(['volume', 'import', join(cwd, 'missing.raw')])).code).toBe(3);
  });

  it('volume import of a qcow2 image and export to qcow2 go through qemu-img', async () => {
    const raw = join(cwd, 'q.raw');
    const data = await writeRawImage(raw, 2 * MiB);
    const qcow = join(cwd, 'q.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow]);
    const r = await json(['volume', 'import', qcow, '--name', 'from-qcow2']);
    expect(r).toMatchObject({ format: 'qcow2', volume: { size: 2 * MiB } });
    const back = join(cwd, 'back.qcow2');
    expect(await json(['volume', 'export', 'from-qcow2', back])).toMatchObject({ format: 'qcow2' });
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', back]).toString());
    expect(info.format).toBe('qcow2');
    const again = join(cwd, 'again.raw');
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', back, again]);
    expect((await readFile(again)).equals(data)).toBe(true);
  });

  it('volume import --into of a qcow2 writes only the blocks that differ, and zeros past the end of a smaller image', async () => {
    const base = join(cwd, 'q-base.raw');
    const data = await writeRawImage(base, 4 * MiB); // MiB 0 and 3 random, 1 text, 2 zeros
    const v = await json(['volume', 'import', base, '--name', 'q-target']);
    const changed = Buffer.from(data.subarray(0, 2 * MiB));
    randomBytes(65536).copy(changed, 5 * 65536);
    await writeFile(join(cwd, 'q-changed.raw'), changed);
    const qcow = join(cwd, 'q-changed.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(cwd, 'q-changed.raw'), qcow]);
    const r = await json(['volume', 'import', qcow, '--into', v.volume.id]);
    // 64 KiB changed, and MiB 3 (data) zeroed past the image's 2 MiB; MiB 2 was zero already.
    expect(r).toMatchObject({ format: 'qcow2', created: false, bytesScanned: 4 * MiB, bytesWritten: 65536 + MiB });
    const out = join(cwd, 'q-target.raw');
    await json(['volume', 'export', v.volume.id, out]);
    expect((await readFile(out)).equals(Buffer.concat([changed, Buffer.alloc(2 * MiB)]))).toBe(true);
  });

  it('volume export to qcow2 is sparse: zero areas of the volume are not allocated in the image', async () => {
    const raw = join(cwd, 's.raw');
    const data = await writeRawImage(raw, 3 * MiB); // MiB 2 is zeros
    await json(['volume', 'import', raw, '--name', 'sparse']);
    const qcow = join(cwd, 'sparse.qcow2');
    expect(await json(['volume', 'export', 'sparse', qcow])).toMatchObject({ format: 'qcow2', bytesWritten: 2 * MiB });
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', qcow]).toString()) as { start: number; length: number; data: boolean }[];
    const dataEnd = Math.max(...map.filter((m) => m.data).map((m) => m.start + m.length));
    expect(dataEnd).toBe(2 * MiB);
    const back = join(cwd, 'sparse-back.raw');
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcow, back]);
    expect((await readFile(back)).equals(data)).toBe(true);
  });

  it('volume export --format vmdk writes a VMDK that qemu-img reads back', async () => {
    const raw = join(cwd, 'v.raw');
    const data = await writeRawImage(raw, 1 * MiB);
    await json(['volume', 'import', raw, '--name', 'for-vmdk']);
    const vmdk = join(cwd, 'out.img');
    await json(['volume', 'export', 'for-vmdk', vmdk, '--format', 'vmdk']);
    const imported = await json(['volume', 'import', vmdk, '--name', 'from-vmdk']);
    expect(imported.format).toBe('vmdk');
    const out = join(cwd, 'from-vmdk.raw');
    await json(['volume', 'export', 'from-vmdk', out]);
    expect((await readFile(out)).equals(data)).toBe(true);
  });
});

describe('cairn volume delete', () => {
  let cwd: string;
  let config: string;
  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
  });
  afterAll(() => removeDir(cwd));
  const run = (args: string[]) => cairn(args, { cwd });
  const json = (args: string[]) => cairnJson(args, { cwd });
  /** Runs `fn` with the deployment's context in this process (another process, as the binary sees it). */
  const inProcess = async <T>(fn: (ctx: CliContext) => Promise<T>): Promise<T> => {
    const ctx = await CliContext.create({ config }, new Output({ quiet: true }));
    try {
      return await fn(ctx);
    } finally {
      await ctx.close();
    }
  };

  it('volume delete of a volume a failed restore left error_restoring deletes it and its flow state (as Cinder does), not CONFLICT', async () => {
    const source = await json(['volume', 'create', 'source', '--size', '1MiB']);
    const backup = await json(['backup', 'create', source.id]);
    const broken = await json(['volume', 'create', 'broken', '--size', '1MiB']);
    // What a restore into `broken` that failed part-way leaves (recovery makes a killed one's so too).
    await inProcess(async (ctx) =>
      (await ctx.catalog()).putVolumeState({ volumeId: broken.id, status: 'error_restoring', previousStatus: 'available', backupId: backup.id, since: new Date().toISOString() }),
    );
    expect((await json(['volume', 'show', broken.id])).status).toBe('error_restoring');

    const r = await run(['volume', 'delete', broken.id, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ deleted: broken.id });
    expect((await run(['volume', 'show', broken.id])).code).toBe(3);
    expect(await inProcess(async (ctx) => (await ctx.catalog()).getVolumeState(broken.id))).toBeUndefined();
  });

  it('volume delete of a volume another process has attached is BUSY (exit 4), as documented, and deletes nothing', async () => {
    const held = await json(['volume', 'create', 'held', '--size', '1MiB']);
    await inProcess(async (ctx) => {
      const driver = await ctx.volumes();
      const a = await driver.attach({ kind: 'volume', id: held.id }, 'rw');
      try {
        expect((await json(['volume', 'show', held.id])).status).toBe('in-use');
        const r = await run(['volume', 'delete', held.id, '--json']);
        expect(r.code).toBe(4);
        expect(jsonError(r).code).toBe('BUSY');
        expect(r.stdout).toBe('');
      } finally {
        await driver.detach(a.id);
      }
    });
    expect((await json(['volume', 'show', held.id])).status).toBe('available');
    expect(await json(['volume', 'delete', held.id])).toEqual({ deleted: held.id });
  });
});

describe('cairn volume list while volumes come and go', () => {
  let cwd: string;
  let config: string;
  beforeAll(async () => {
    cwd = await tempDir();
    config = await writeDeploymentConfig(cwd);
  });
  afterAll(() => removeDir(cwd));

  it('shows the volumes as the driver listed them when one is deleted right after, instead of failing with NOT_FOUND', async () => {
    const kept = await cairnJson(['volume', 'create', 'kept', '--size', '1MiB'], { cwd });
    const gone = await cairnJson(['volume', 'create', 'gone', '--size', '1MiB'], { cwd });
    // The command runs in this process; its volume driver deletes `gone` (as another process
    // would) right after listing it, before the command reads the flow states. The list is the
    // driver's listing with the states laid over it (BackupManager.listVolumes): no volume is read
    // again, so none is NOT_FOUND.
    const volumes = CliContext.prototype.volumes;
    const spy = vi.spyOn(CliContext.prototype, 'volumes').mockImplementation(async function (this: CliContext) {
      const driver = await volumes.call(this);
      const listVolumes = async () => {
        const all = await driver.listVolumes();
        await driver.deleteVolume(gone.id);
        return all;
      };
      return new Proxy(driver, { get: (t, p) => (p === 'listVolumes' ? listVolumes : Reflect.get(t, p)) });
    });
    const stdout: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (stdout.push(String(chunk)), true));
    const exitCode = process.exitCode;
    try {
      await buildProgram().parseAsync(['node', 'cairn', 'volume', 'list', '--config', config, '--json']);
      expect(process.exitCode).toBe(0);
    } finally {
      write.mockRestore();
      spy.mockRestore();
      process.exitCode = exitCode;
    }
    expect(JSON.parse(stdout.join('')).map((v: { id: string; status: string }) => [v.id, v.status])).toEqual([
      [kept.id, 'available'],
      [gone.id, 'available'],
    ]);
  });
});

/**
 * Overwriting a large sparse volume with a small image (`volume import --into`) on a real file
 * volume: what the device holds is read only where its allocated extents say it may hold data
 * (holes already read as zeros), only differing blocks are written, and the result is exact.
 */
describe('volume import --into a sparse volume reads only its data', () => {
  const SIZE = 256 * MiB;
  const K64 = 64 * 1024;
  let dir: string;
  let driver: FileVolumeDriver;
  beforeAll(async () => {
    dir = await tempDir();
    driver = new FileVolumeDriver({ directory: join(dir, 'volumes') });
  });
  afterAll(() => removeDir(dir));

  /** A SIZE volume holding A (1 MiB at 0), B (1 MiB at 2 MiB), C (1 MiB at 100 MiB), D (64 KiB at 200 MiB); holes elsewhere. */
  const sparseVolume = async (name: string) => {
    const v = await driver.createVolume({ name, size: SIZE });
    const a = await driver.attach({ kind: 'volume', id: v.id }, 'rw');
    const parts = { A: randomBytes(MiB), B: randomBytes(MiB), C: randomBytes(MiB), D: randomBytes(K64) };
    await a.device.write(0, parts.A);
    await a.device.write(2 * MiB, parts.B);
    await a.device.write(100 * MiB, parts.C);
    await a.device.write(200 * MiB, parts.D);
    await a.device.flush();
    const allocated = (await a.device.extents({ kind: 'allocated' })).reduce((n, e) => n + e.length, 0);
    return { a, parts, allocated };
  };

  /** `device`, counting the bytes read from it and the bytes written to it (data and zeros). */
  const counting = (device: BlockDevice) => {
    const n = { read: 0, written: 0 };
    const spy: BlockDevice = {
      size: device.size,
      mode: device.mode,
      driverName: device.driverName,
      extentGranularity: device.extentGranularity,
      read: (o, l, into) => ((n.read += l), device.read(o, l, into)),
      write: (o, d) => ((n.written += d.byteLength), device.write(o, d)),
      writeZeroes: (o, l) => ((n.written += l), device.writeZeroes(o, l)),
      flush: () => device.flush(),
      extents: (q, r) => device.extents(q, r),
      close: () => device.close(),
    };
    return { spy, n };
  };

  const expectContent = async (device: BlockDevice, want: Map<number, Buffer>) => {
    for (let off = 0; off < device.size; off += 16 * MiB) {
      const got = await device.read(off, 16 * MiB);
      const expected = Buffer.alloc(16 * MiB);
      for (const [at, bytes] of want) if (at >= off && at < off + 16 * MiB) bytes.copy(expected, at - off);
      expect(got.equals(expected), `bytes at ${off}`).toBe(true);
    }
  };

  it('raw image (writeImageToDevice): holes are neither read nor written, zero regions of the image over holes cost nothing, bytesWritten counts only differing blocks, result byte-exact', async () => {
    const { a, parts, allocated } = await sparseVolume('raw-into');
    try {
      // 4 MiB image: MiB 0 is A with one 64 KiB block changed; MiB 1 zeros (a hole on the volume);
      // MiB 2 zeros (B on the volume: must become zero); MiB 3 new data (a hole on the volume).
      const image = Buffer.alloc(4 * MiB);
      parts.A.copy(image, 0);
      randomBytes(K64).copy(image, 5 * K64);
      const fresh = randomBytes(MiB);
      fresh.copy(image, 3 * MiB);
      const file = join(dir, 'small.raw');
      await writeFile(file, image);
      const { spy, n } = counting(a.device);
      const stats = await writeImageToDevice(file, spy);
      // Past the image only C and D held data and are zeroed: 64 KiB + B + MiB 3 + C + D written.
      expect(stats).toEqual({ bytesScanned: SIZE, bytesWritten: K64 + MiB + MiB + MiB + K64 });
      expect(n.written).toBe(stats.bytesWritten);
      expect(n.read, 'bytes read from the volume: only its allocated extents').toBeLessThanOrEqual(allocated);
      await expectContent(a.device, new Map([[0, image]]));
    } finally {
      await driver.detach(a.id);
    }
  });

  it('qcow2/VMDK path (differingWrites.writeZeroes past the image): only allocated extents are read, only data is zeroed, bytesWritten exact', async () => {
    const { a, parts, allocated } = await sparseVolume('zero-tail');
    try {
      const { spy, n } = counting(a.device);
      const target = differingWrites(spy);
      await target.device.writeZeroes(MiB, SIZE - MiB); // B, C and D become zero; A stays
      expect(target.bytesWritten).toBe(MiB + MiB + K64);
      expect(n.written).toBe(target.bytesWritten);
      expect(n.read, 'bytes read from the volume: only its allocated extents').toBeLessThanOrEqual(allocated - MiB);
      await expectContent(a.device, new Map([[0, parts.A]]));
      // Cancelled: fails with CANCELLED before reading anything.
      const ac = new AbortController();
      ac.abort();
      await expect(differingWrites(spy, ac.signal).device.writeZeroes(0, SIZE)).rejects.toMatchObject({ code: 'CANCELLED' });
    } finally {
      await driver.detach(a.id);
    }
  });
});
